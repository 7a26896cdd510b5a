"""spargering.attention's sparse mode against `sparge run` on the same inputs: the same library behind two
doors, so the masks must be equal block for block and the outputs equal to fp32 rounding."""
import os
import subprocess

import pytest

from conftest import smooth

CASES = [  # (label, Hq, Hkv, N, D, extra options, attention() arguments)
    ("TopCdf 0.9, partial tail", 4, 2, 700, 32, ["--cdf", "0.9"], {"cdfthreshd": 0.9}),
    ("TopCdf 0.95 causal", 2, 2, 640, 32, ["--cdf", "0.95", "--causal"], {"cdfthreshd": 0.95, "is_causal": True}),
    ("TopK 0.3 sink θ 0.5", 2, 1, 512, 64, ["--topk", "0.3", "--sink", "--theta", "0.5"],
     {"topk": 0.3, "attention_sink": True, "simthreshd1": 0.5}),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_sparse_mode_equals_sparge_run(np, spargering, sparge_binary, tmp_path, case):
    label, hq, hkv, n, d, options, kwargs = case
    rng = np.random.default_rng(11)
    q, k, v = (smooth(np, rng, (1, h, n, d)) for h in (hq, hkv, hkv))
    paths = {}
    for name, x in (("q", q), ("k", k), ("v", v)):
        paths[name] = str(tmp_path / f"{name}.npy")
        np.save(paths[name], x[0])
    out_path, mask_path = str(tmp_path / "o.npy"), str(tmp_path / "mask.npy")
    run = subprocess.run([sparge_binary, "run", "--q", paths["q"], "--k", paths["k"], "--v", paths["v"],
                          "--output", out_path, "--mask-output", mask_path, "--threads", "2", *options],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"{label}: sparge run failed: {run.stderr}"
    out, sparsity, mask = spargering.attention(q, k, v, return_sparsity=True, return_mask=True, threads=2, **kwargs)
    expected_mask = np.load(mask_path)
    assert mask.shape == (1,) + expected_mask.shape, label
    assert np.array_equal(mask[0], expected_mask), f"{label}: {int((mask[0] != expected_mask).sum())} blocks differ"
    assert 0.05 < sparsity < 0.95, f"{label}: sparsity {sparsity} (the inputs should give a partly sparse mask)"
    # Same kernels, same visit order: any difference is fp32 rounding of a different summation order.
    expected = np.load(out_path)
    error = float(np.abs(out[0] - expected).sum() / np.abs(expected).sum())
    assert error < 1e-6, f"{label}: relative L1 {error:.2e} against sparge run"
