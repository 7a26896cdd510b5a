"""The Python entry's cost outside the pass: spargering.attention on torch fp32 tensors [1, 8, 32768, 128],
TopK 0.1, 2 threads: fp32, fp32 products on bf16 K/V storage, and bf16 products; the call's wall time
and the pass's own total_seconds (last_statistics), medians of the last 3 of 4 calls, and their
difference. (For builds of the C interface's version 1, where `precision=` named the storage, use this
script as of commit 533bda3.) Usage (SPARGE_LIBRARY picks the build):
    SPARGE_LIBRARY=/path/libSpargeC.so python benchmarks/python-entry/entry-overhead.py LABEL   (from the checkout)
"""
import sys, time, torch, statistics
sys.path.insert(0, "python")  # run from the checkout: its package, whatever is installed
import spargering
torch.manual_seed(0)
H, N, D = 8, 32768, 128
q, k, v = (torch.randn(1, H, N, D) for _ in range(3))
for label, kw in (("fp32", {}), ("bf16 K/V", {"kv_precision": "bf16"}), ("bf16 products", {"precision": "bf16"})):
    walls, passes = [], []
    for _ in range(4):
        t = time.perf_counter(); o = spargering.attention(q, k, v, topk=0.1, simthreshd1=-1.0, threads=2, **kw); walls.append(time.perf_counter() - t)
        passes.append(spargering.last_statistics()["total_seconds"]); del o
    w, p = statistics.median(walls[1:]), statistics.median(passes[1:])
    print(f"{sys.argv[1]} {label}: call {w:.3f} s, pass {p:.3f} s, outside {1e3*(w-p):.0f} ms", flush=True)
