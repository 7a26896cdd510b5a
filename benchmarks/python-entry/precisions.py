"""spargering.attention on the CPU in each precision from Python: torch fp32 tensors [1, 8, N, 128] of the
`smooth` test inputs (structured, as real attention), TopK 0.1; the call's wall time (median of the last 3
of 4 calls, and the pass's own) and the error of one dense call at N = 2048 against float64 SDPA.
    python precisions.py [N [THREADS]]     (default 16384, 2; SPARGE_LIBRARY picks the build; run from the checkout)
"""
import statistics, sys, time
import numpy as np, torch
sys.path.insert(0, "python"); sys.path.insert(0, "python/tests")
import spargering
from inputs import smooth

n = int(sys.argv[1]) if len(sys.argv) > 1 else 16384
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
rng = np.random.default_rng(0)
small = [smooth(np, rng, (1, 2, 2048, 128)) for _ in range(3)]
ref = torch.nn.functional.scaled_dot_product_attention(*(torch.from_numpy(x).double() for x in small)).numpy()
q, k, v = (torch.from_numpy(smooth(np, rng, (1, 8, n, 128))) for _ in range(3))
for precision in ("fp32", "bf16", "int8"):
    out = spargering.attention(*small, topk=1.0, precision=precision, threads=threads)
    error = float(np.abs(out - ref).sum() / np.abs(ref).sum())
    walls, passes = [], []
    for _ in range(4):
        t = time.perf_counter(); o = spargering.attention(q, k, v, topk=0.1, precision=precision, threads=threads)
        walls.append(time.perf_counter() - t); del o
        passes.append(spargering.last_statistics()["total_seconds"])
    print(f"{precision}: N={n} TopK 0.1 call {statistics.median(walls[1:]):.3f} s (pass {statistics.median(passes[1:]):.3f} s); "
          f"dense rel L1 vs float64 {error:.2e}", flush=True)
