"""spargering with PyTorch CUDA tensors on a GPU machine (run by gpu-python.sh; plain Python, no pytest):

1. correctness: bf16 CUDA tensors in (HND and NHD, GQA, B = 2, causal), CUDA tensors out, the mask equal
   to the CPU's bit for bit, the output within 5e-3 relative L1 of the CPU's on the same bf16 values;
2. the trace of one call (SPARGE_CUDA_TRACE=1, in a child process): what crossed between host and device;
3. the call's time next to the library's own time for that call and `sparge bench --backend cuda` on the
   same shape (dense, so that both compute the same blocks; and TopCdf 0.95 for information).

    SPARGE_LIBRARY=…/libSpargeC.so python3 benchmarks/gpu-python.py --sparge …/sparge [--trace-child]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(checkout, "python"), os.path.join(checkout, "python", "tests")]
import numpy as np  # noqa: E402
import torch  # noqa: E402

import inputs  # noqa: E402  (python/tests)
import spargering  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--sparge", required=True)
parser.add_argument("--seq", type=int, default=32768)
parser.add_argument("--heads", type=int, default=8)
parser.add_argument("--head-dim", type=int, default=128)
parser.add_argument("--repeat", type=int, default=5)
parser.add_argument("--trace-child", action="store_true", help="(internal) one traced call, then exit")
a = parser.parse_args()


def smooth(rng, shape):
    """Smooth float32 inputs (python/tests/inputs.py) as a CPU tensor."""
    return torch.from_numpy(inputs.smooth(np, rng, shape))


if a.trace_child:
    q = smooth(np.random.default_rng(0), (1, a.heads, a.seq, a.head_dim)).to(torch.bfloat16).cuda()
    spargering.attention(q, q, q, is_causal=True)  # warm: kernels compiled, pools filled
    print("--- traced call (bf16 CUDA tensors in) ---", file=sys.stderr, flush=True)
    spargering.attention(q, q, q, is_causal=True)
    sys.exit(0)

print(f"library {spargering.library_path()}; torch {torch.__version__}; {torch.cuda.get_device_name()}")
from cuda_checks import cuda_against_cpu  # noqa: E402  (python/tests, shared with the pytest test)

failures = 0
for layout, placed, masks_equal, error in cuda_against_cpu(np, torch, spargering, inputs.smooth):
    ok = placed and masks_equal and error < 5e-3
    failures += not ok
    print(f"{'ok' if ok else 'FAILED'}: {layout} bf16 CUDA tensors in, {'CUDA bf16 out' if placed else 'WRONG output'}, "
          f"masks {'equal' if masks_equal else 'DIFFER'}, rel L1 to the CPU {error:.2e}")

child = subprocess.run([sys.executable, __file__, "--sparge", a.sparge, "--seq", str(a.seq), "--heads", str(a.heads),
                        "--head-dim", str(a.head_dim), "--trace-child"],
                       env=dict(os.environ, SPARGE_CUDA_TRACE="1"), capture_output=True, text=True)
print(child.stderr[child.stderr.find("--- traced call"):] if child.returncode == 0 else f"FAILED trace: {child.stderr}")

shape = (1, a.heads, a.seq, a.head_dim)
q, k, v = (smooth(np.random.default_rng(s), shape).to(torch.bfloat16).cuda() for s in (1, 2, 3))
print(f"| N={a.seq}, {a.heads} heads, D={a.head_dim}, causal, bf16 CUDA tensors | density | spargering.attention s "
      "| inside the library s | sparge bench s (llm workload) | call / bench |")
print("| --- | --- | --- | --- | --- | --- |")
for label, kwargs, options in [("dense", {"topk": 1.0}, ["--dense"]), ("TopCdf 0.95", {"cdfthreshd": 0.95}, ["--cdf", "0.95"])]:
    spargering.attention(q, k, v, is_causal=True, **kwargs)  # warm
    calls, inside = [], []
    for _ in range(a.repeat):
        torch.cuda.synchronize()
        start = time.perf_counter()
        spargering.attention(q, k, v, is_causal=True, **kwargs)
        torch.cuda.synchronize()
        calls.append(time.perf_counter() - start)
        inside.append(spargering.last_statistics()["total_seconds"])
    density = spargering.last_statistics()["density"]
    bench = subprocess.run([a.sparge, "bench", "--backend", "cuda", "--workload", "llm", "--seq", str(a.seq), "--heads",
                            str(a.heads), "--head-dim", str(a.head_dim), "--causal", "--repeat", str(a.repeat),
                            "--json", *options], capture_output=True, text=True)
    try:
        seconds = json.loads(bench.stdout.strip().splitlines()[-1])["seconds"]
    except (ValueError, IndexError, KeyError):
        print(f"sparge bench failed: {bench.stderr[-2000:]}")
        seconds = float("nan")
    call = statistics.median(calls)
    print(f"| {label} | {density:.3f} | {call:.4f} | {statistics.median(inside):.4f} | {seconds:.4f} | {call / seconds:.2f} |")
sys.exit(1 if failures else 0)
