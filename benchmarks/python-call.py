"""What the Python binding costs: the wall time of each spargering.attention call against the library's own
time inside that same call (`last_statistics()["total_seconds"]`), next to `sparge run` on the same inputs
(the same library behind the command line) and PyTorch's fp32 SDPA (the peer) on the same shape. One
process; medians of --repeat calls.

    SPARGE_LIBRARY=/tmp/rel/release/libSpargeC.so .build/python-venv/bin/python benchmarks/python-call.py \\
        --sparge /tmp/rel/release/sparge --seq 8192 --heads 8 --head-dim 64 --threads 2
"""
import argparse
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

parser = argparse.ArgumentParser()
parser.add_argument("--sparge", required=True)
parser.add_argument("--seq", type=int, default=8192)
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


def timed(call):
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def sparge_run(folder, options):
    out = subprocess.run([a.sparge, "run", "--q", f"{folder}/q.npy", "--k", f"{folder}/k.npy", "--v", f"{folder}/v.npy",
                          "--output", f"{folder}/o.npy", "--force", "--causal", "--json", "--threads", str(a.threads),
                          *options], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


print(f"N={a.seq} Hq=Hkv={a.heads} D={a.head_dim} causal, fp32 NumPy in, {a.threads} threads, medians of {a.repeat}")
print("| mode | density | spargering.attention s | inside the library s | binding's cost | sparge run (forward) s "
      "| PyTorch SDPA s |")
print("| --- | --- | --- | --- | --- | --- | --- |")
qt, kt, vt = (torch.from_numpy(x) for x in (q, k, v))
flops = 4 * a.seq ** 2 * a.head_dim * a.heads / 2
with tempfile.TemporaryDirectory() as folder:
    for name, x in (("q", q), ("k", k), ("v", v)):
        np.save(os.path.join(folder, f"{name}.npy"), x[0])
    for label, kwargs, options in [(f"sparse cdf {a.cdf}", {"cdfthreshd": a.cdf}, ["--cdf", str(a.cdf)]),
                                   ("dense (topk 1.0)", {"topk": 1.0}, ["--dense"])]:
        calls, inside, runs, sdpa = [], [], [], []
        for _ in range(a.repeat):  # interleaved, so that the machine's load falls on all alike
            calls.append(timed(lambda: spargering.attention(q, k, v, is_causal=True, threads=a.threads, **kwargs)))
            inside.append(spargering.last_statistics()["total_seconds"])
            runs.append(sparge_run(folder, options))
            sdpa.append(timed(lambda: torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=True)))
        cost = statistics.median(c - i for c, i in zip(calls, inside))
        s = statistics.median(sdpa)
        print(f"| {label} | {spargering.last_statistics()['density']:.3f} | {statistics.median(calls):.3f} | "
              f"{statistics.median(inside):.3f} | {1000 * cost:.0f} ms ({100 * cost / statistics.median(inside):.1f}%) | "
              f"{statistics.median(runs):.3f} | {s:.3f} ({flops / s / 1e9:.0f} GFLOP/s) |")
