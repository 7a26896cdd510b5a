"""Run on every rank by test_mpi.py under `mpirun -np P`: shard → attention → unshard against one process
(masks exactly, outputs to 1e-5), then a bad input on one rank, which must raise on every rank. Prints one
`rank R: …` line per check; exits non-zero on the first failed check."""
import sys

import numpy as np
from mpi4py import MPI

import inputs
import spargering

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()


def check(condition, message):
    if not condition:
        print(f"rank {rank}: FAILED {message}", flush=True)
        sys.exit(1)


def smooth(rng, shape):
    return inputs.smooth(np, rng, shape)


def same_rows(layout, local_mask, full_mask, is_causal, n):
    """This rank's query blocks' rows of the single-process mask."""
    blocks = sorted({t // 128 for s, e in spargering._ranges(n, size, rank, is_causal) for t in range(s, e)})
    return np.array_equal(local_mask, full_mask[:, :, blocks])


# Odd lengths leave a partial tail block; B = 2, GQA, both layouts, causal (zigzag) and not.
cases = [(False, "HND", 1000, 4, 2), (True, "HND", 1100, 2, 1), (True, "NHD", 777, 2, 2)]
for is_causal, layout, n, hq, hkv in cases:
    label = f"{'causal' if is_causal else 'full'} {layout} N={n} Hq={hq} Hkv={hkv}"
    rng = np.random.default_rng(n)  # the same inputs on every rank
    q, k, v = (smooth(rng, (2, h, n, 32)) for h in (hq, hkv, hkv))
    if layout == "NHD":
        q, k, v = (x.transpose(0, 2, 1, 3).copy() for x in (q, k, v))
    seq_dim = 2 if layout == "HND" else 1
    kwargs = dict(tensor_layout=layout, is_causal=is_causal, cdfthreshd=0.9, return_mask=True, return_sparsity=True)
    one, one_sparsity, one_mask = spargering.attention(q, k, v, **kwargs)  # one process, no MPI
    local = [spargering.shard(x, comm, is_causal=is_causal, seq_dim=seq_dim) for x in (q, k, v)]
    out, sparsity, mask = spargering.attention(*local, comm=comm, **kwargs)
    full = spargering.unshard(out, comm, is_causal=is_causal, seq_dim=seq_dim)
    check(same_rows(layout, mask, one_mask, is_causal, n), f"{label}: mask rows differ from one process")
    check(sparsity == one_sparsity, f"{label}: sparsity {sparsity} vs {one_sparsity}")
    check(0.05 < sparsity < 0.95, f"{label}: sparsity {sparsity}: the inputs should give a partly sparse mask")
    # fp32 sums in another order (the ring visits key blocks rank by rank): ~1e-7 relative.
    error = float(np.abs(full - one).sum() / np.abs(one).sum())
    check(error < 1e-5, f"{label}: relative L1 {error:.2e} against one process")
    print(f"rank {rank}: ok {label} sparsity {sparsity:.3f} rel L1 {error:.1e}", flush=True)

# A bad input on one rank only: every rank must raise, naming the rank and what was wrong.
bad_inputs = [("head dim", lambda q: q[:, :, :, :16], {}, "q, k and v must agree"),
              ("dtype", lambda q: q.astype(np.float64), {}, "float64"),
              ("axes", lambda q: q[0], {}, "4 axes"),
              ("type", lambda q: q.tolist(), {}, "list"),
              ("backend", lambda q: q, {"backend": "gpu"}, "'gpu'")]
for label, bad, options, words in bad_inputs:
    rng = np.random.default_rng(1)
    q, k, v = (smooth(rng, (1, 2, 500, 32)) for _ in range(3))
    local = [spargering.shard(x, comm) for x in (q, k, v)]
    if rank != size - 1:
        options = {}
    else:
        local[0] = bad(local[0])
    try:
        spargering.attention(*local, comm=comm, **options)
        check(False, f"bad {label} on rank {size - 1}: no error")
    except spargering.SpargeError as e:
        check(f"rank {size - 1}: " in str(e) and words in str(e), f"bad {label}: message {e}")
        print(f"rank {rank}: raised for bad {label}: {e}", flush=True)
# The communicator still works after the errors.
check(comm.allreduce(1) == size, "allreduce after the errors")
print(f"rank {rank}: done", flush=True)
