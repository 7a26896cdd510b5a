"""What the Python binding costs: spargering.attention's wall time against the library's own time for the
same call (sparge_statistics.total_seconds) and against `sparge run` on the same inputs, next to PyTorch's
fp32 SDPA (the peer) on the same shape. One process; medians of --repeat calls.

    SPARGE_LIBRARY=.build/release/libSpargeC.so .build/python-venv/bin/python benchmarks/python-call.py \
        --sparge .build/release/sparge --seq 16384 --heads 8 --head-dim 64 --threads 2
"""
import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))
import numpy as np  # noqa: E402
import torch  # noqa: E402

import spargering  # noqa: E402
from spargering import _library as L  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--sparge", required=True)
parser.add_argument("--seq", type=int, default=16384)
parser.add_argument("--heads", type=int, default=8)
parser.add_argument("--head-dim", type=int, default=64)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--repeat", type=int, default=5)
parser.add_argument("--cdf", type=float, default=0.95)
a = parser.parse_args()
torch.set_num_threads(a.threads)

rng = np.random.default_rng(0)
shape = (1, a.heads, a.seq, a.head_dim)
# Smooth along the sequence (a random walk), so that the mask is sparse as in real attention.
q, k, v = ((np.cumsum(rng.standard_normal(shape), axis=2) / 90).astype(np.float32) for _ in range(3))


def library_seconds(**kwargs):
    """The library's own total_seconds for one call, read from the context's statistics through ctypes."""
    context = spargering._context(None, a.threads)
    params = L.Params()
    spargering._fill(params, True, None, 0.6, kwargs.get("cdfthreshd", 0.98), kwargs.get("topk"), 50, False, None,
                     q, False)
    views = [spargering.View(n, x) for n, x in (("q", q), ("k", k), ("v", v))]
    out = np.empty_like(q)
    views.append(spargering.View("out", out))
    stats = L.Statistics()
    L.call(L.library().sparge_forward, context, ctypes.byref(params), *[ctypes.byref(x.struct) for x in views],
           None, ctypes.byref(stats), None)
    return stats.total_seconds, stats.density


def median_time(call):
    times = []
    for _ in range(a.repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


rows = []
for label, kwargs, options in [(f"sparse cdf {a.cdf}", {"cdfthreshd": a.cdf}, ["--cdf", str(a.cdf)]),
                               ("dense (topk 1.0)", {"topk": 1.0}, ["--dense"])]:
    call = median_time(lambda: spargering.attention(q, k, v, is_causal=True, threads=a.threads, **kwargs))
    inside = statistics.median(library_seconds(**kwargs)[0] for _ in range(a.repeat))
    density = library_seconds(**kwargs)[1]
    with tempfile.TemporaryDirectory() as folder:
        for name, x in (("q", q), ("k", k), ("v", v)):
            np.save(os.path.join(folder, f"{name}.npy"), x[0])
        runs = []
        for _ in range(a.repeat):
            out = subprocess.run([a.sparge, "run", "--q", f"{folder}/q.npy", "--k", f"{folder}/k.npy", "--v",
                                  f"{folder}/v.npy", "--output", f"{folder}/o.npy", "--force", "--causal", "--json",
                                  "--threads", str(a.threads), *options], capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    run_seconds = statistics.median(r.get("seconds", r.get("time", float("nan"))) for r in runs)
    rows.append((label, density, call, inside, run_seconds))

qt, kt, vt = (torch.from_numpy(x) for x in (q, k, v))
sdpa = median_time(lambda: torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=True))
flops = 4 * a.seq ** 2 * a.head_dim * a.heads / 2
print(f"N={a.seq} Hq=Hkv={a.heads} D={a.head_dim} causal, fp32 numpy in, {a.threads} threads, median of {a.repeat}")
print("| mode | density | spargering.attention s | library total s | call − library | sparge run (forward) s | PyTorch SDPA s |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for label, density, call, inside, run_seconds in rows:
    print(f"| {label} | {density:.3f} | {call:.3f} | {inside:.3f} | {100 * (call - inside) / inside:+.1f}% | "
          f"{run_seconds:.3f} | {sdpa:.3f} ({flops / sdpa / 1e9:.0f} GFLOP/s) |")
