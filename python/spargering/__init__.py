"""SpargeAttn sparse attention (SpargeRing) for NumPy arrays and PyTorch tensors, on one process or on the
ranks of an mpi4py communicator.

    out = spargering.attention(q, k, v, is_causal=True)                    # one process
    q_local = spargering.shard(q, comm, is_causal=True)                     # this rank's rows
    out_local = spargering.attention(q_local, k_local, v_local, comm=comm, is_causal=True)
    out = spargering.unshard(out_local, comm, is_causal=True)              # every row, on every rank

The arguments keep upstream SpargeAttn's names (`spas_sage2_attn_meansim_cuda`). Errors are `SpargeError`
(a ValueError) with the library's message, raised on every rank of `comm` together.
"""
import ctypes
import os
import threading

from . import _library as L
from ._arrays import View, describe, empty_like, is_torch, to_numpy
from ._library import SpargeError

__all__ = ["attention", "shard", "unshard", "SpargeError", "library_path", "last_statistics"]

# What the products compute in (the command line's --precision), and what K/V are stored in.
_PRECISIONS = {"fp32": L.PRECISION_FP32, "float32": L.PRECISION_FP32, "bf16": L.PRECISION_BF16,
               "bfloat16": L.PRECISION_BF16, "fp16": L.PRECISION_FP16, "float16": L.PRECISION_FP16,
               "int8": L.PRECISION_INT8}
_STORAGE = {"fp32": L.DTYPE_F32, "f32": L.DTYPE_F32, "float32": L.DTYPE_F32, "bf16": L.DTYPE_BF16,
            "bfloat16": L.DTYPE_BF16, "fp16": L.DTYPE_F16, "f16": L.DTYPE_F16, "float16": L.DTYPE_F16}


_last_statistics = None


def last_statistics():
    """The counters and timings of this process's last `attention` call, as a dict (None before one):
    computed_blocks and block_area (the mask over all ranks), density, bytes_sent and dense_ring_bytes
    (the ring on this rank), skipped_pv_blocks, seq_len, and the seconds of each phase and in total inside
    the library (summary_seconds, mask_seconds, ring_seconds, total_seconds), summed over the batch."""
    return dict(_last_statistics) if _last_statistics else None


def library_path():
    """The path of the libSpargeC.so in use (see `_library.candidates` for where it is looked for)."""
    return L.library().path


def attention(q, k, v, *, comm=None, tensor_layout="HND", is_causal=False, scale=None, simthreshd1=0.6,
              cdfthreshd=0.98, topk=None, pvthreshd=50, attention_sink=False, precision=None, kv_precision=None,
              return_lse=False, return_sparsity=False, return_mask=False, threads=None, backend=None):
    """SpargeAttn attention of q over k, v: `[B, H, N, D]` (tensor_layout "HND") or `[B, N, H, D]` ("NHD").

    q has Hq heads, k and v Hkv heads with Hq a multiple of Hkv (GQA). NumPy arrays or PyTorch tensors of
    float32, bfloat16 or float16, any strides, read in place through DLPack (no copy). The result is a new
    array of q's kind, dtype, device and layout (contiguous).

    With `comm` (an mpi4py communicator), every rank passes its own rows of the sequence, in the order
    `shard(x, comm, is_causal)` gives them, and gets its own rows back; the call is collective. Without
    it, one process computes the whole sequence and MPI is not touched.

    - is_causal: token-level causal attention (the shards then zigzag).
    - scale: softmax scale (default 1/sqrt(D)); mask prediction always uses 1/sqrt(D).
    - simthreshd1: θ, the self-similarity threshold of a block (default 0.6).
    - cdfthreshd: TopCdf τ (default 0.98), unless topk is given.
    - topk: keep this fraction of key blocks per query block; topk=1.0 computes every block (dense).
    - pvthreshd: λ in log2 units (default 50: off; at 50 and above every block is computed).
    - attention_sink: always compute key block 0.
    - precision: what Q, K and V are rounded or quantized to before the products, as the command line's
      --precision: "fp32" (exact; the CPU's default), "bf16" (the GPU's default; on CPUs, AMX or
      AVX512-BF16 tiles where they are), "fp16", or "int8" (SageAttention's INT8 Q·Kᵀ, K smoothed by its
      mean; P·V in integers on the CPU, P in 14-bit fixed point and V in 12 bits, in fp16 on the GPU). The
      GPU computes in bf16, fp16 and int8 only. (Before the C interface's version 2, `precision` named
      what `kv_precision` names now.)
    - kv_precision: the type K/V blocks are stored and sent around the ring in ("fp32" or "f32", "bf16",
      "fp16" or "f16"): by default, with `precision`, the command line's --kv-precision default (on the
      CPU the type `precision` rounds to, fp32 for fp32 and int8; bf16 on the GPU); without it, the
      inputs' own 16-bit type, else fp32.
    - return_lse: also return the row log-sum-exp, float32 `[B, Hq, N]` (natural log).
    - return_sparsity: also return 1 − density of the mask over the whole run.
    - return_mask: also return this rank's mask rows, a NumPy uint8 array `[B, Hq, query blocks, key
      blocks]` (1 = computed; the query blocks this rank holds, all key blocks).
    - threads: worker threads (default: the cores this process may use, divided among the MPI ranks of
      its node).
    - backend: who computes the mask and the tiles: "cpu", or "cuda" (this rank's GPU: its node-local rank
      modulo the GPUs; Q, K, V rounded as `precision` asks, bf16 by default; the mask is the CPU's bit for
      bit). Default: "cuda"
      for PyTorch CUDA tensors, which the library then reads in place and writes the output into on the
      device (no host copy of Q, K, V or the output), else "cpu". SPARGE_CUDA_TRACE=1 makes
      the CUDA engine print its host phases and copies to stderr.

    Returns the output, followed by lse, sparsity and mask in that order for those asked for. Raises
    SpargeError (on every rank) for inputs the library cannot take, naming the tensor, shape and dtype.
    """
    on_gpu = is_torch(q) and q.device.type == "cuda"
    backend = backend or ("cuda" if on_gpu else "cpu")
    context = _context(comm, threads, backend if backend in _ENGINES else "cpu")
    problem, views, out, lse = None, None, None, None
    params = L.Params()
    # Every problem found here is handed to the library, which raises it on every rank together.
    try:
        if backend not in _ENGINES:
            raise SpargeError(f"backend {backend!r} is neither 'cpu' nor 'cuda'")
        if tensor_layout not in ("HND", "NHD"):
            raise SpargeError(f"tensor_layout {tensor_layout!r} is neither 'HND' nor 'NHD'")
        axes = (0, 1, 2, 3) if tensor_layout == "HND" else (0, 2, 1, 3)
        _fill(params, is_causal, scale, simthreshd1, cdfthreshd, topk, pvthreshd, attention_sink, precision,
              kv_precision, q, return_mask)
        views = [View(name, x, axes) for name, x in (("q", q), ("k", k), ("v", v))]
        # The output goes where q is: for CUDA tensors the library writes it on the device; the LSE is written
        # in host memory and moves to q's device after.
        out = empty_like(q, tuple(q.shape), host=not on_gpu)
        views.append(View("out", out, axes))
        if return_lse:
            b, hq, n = (int(s) for s in views[0].struct.shape[:3])
            lse = empty_like(q, (b, hq, n), "float32", host=True)
        if on_gpu:
            import torch
            torch.cuda.synchronize(q.device)  # Q, K, V written on any of PyTorch's streams are complete
    except SpargeError as e:
        problem, views = str(e), None
    structs = [ctypes.byref(v.struct) for v in views] if views else [None] * 4
    statistics = L.Statistics()
    lse_pointer = _address(lse) if lse is not None else None
    with _locks[context.value]:
        L.call(L.library().sparge_forward, context, ctypes.byref(params), *structs, lse_pointer,
               ctypes.byref(statistics), problem.encode() if problem else None)
        mask = _mask(context) if return_mask else None
    global _last_statistics
    _last_statistics = statistics.as_dict()
    results = [out]
    if return_lse:
        results.append(lse.to(q.device) if on_gpu else lse)
    if return_sparsity:
        results.append(1.0 - statistics.density)
    if return_mask:
        results.append(mask)
    return results[0] if len(results) == 1 else tuple(results)


def _fill(params, is_causal, scale, simthreshd1, cdfthreshd, topk, pvthreshd, attention_sink, precision,
          kv_precision, q, keep_mask):
    if topk is not None:
        params.selection, params.topk = (L.SELECT_DENSE, 1.0) if topk == 1.0 else (L.SELECT_TOPK, topk)
    else:
        params.selection, params.cdf_threshold = L.SELECT_CDF, cdfthreshd
    params.sim_threshold, params.pv_threshold = simthreshd1, pvthreshd
    params.scale = 0.0 if scale is None else scale
    if scale is not None and not scale > 0:
        raise SpargeError(f"scale {scale} must be positive")
    params.causal, params.sink, params.keep_mask = int(bool(is_causal)), int(bool(attention_sink)), int(keep_mask)
    if precision is None:
        params.precision = L.PRECISION_DEFAULT
    elif precision in _PRECISIONS:
        params.precision = _PRECISIONS[precision]
    else:
        raise SpargeError(f"precision {precision!r} is none of {sorted(_PRECISIONS)}")
    if kv_precision is not None:
        if kv_precision not in _STORAGE:
            raise SpargeError(f"kv_precision {kv_precision!r} is none of {sorted(_STORAGE)}")
        params.kv_dtype = _STORAGE[kv_precision]
    elif precision is not None:
        params.kv_dtype = -1  # the type the precision rounds to
    else:
        name = str(getattr(q, "dtype", "")).replace("torch.", "")
        params.kv_dtype = _STORAGE[name] if name in ("bfloat16", "float16") else L.DTYPE_F32


def _address(x):
    return x.data_ptr() if is_torch(x) else x.ctypes.data


def _mask(context):
    import numpy
    lib = L.library()
    sizes = [ctypes.c_int64() for _ in range(4)]
    L.call(lib.sparge_context_mask, context, *[ctypes.byref(s) for s in sizes], None, 0)
    mask = numpy.empty([s.value for s in sizes], dtype=numpy.uint8)
    L.call(lib.sparge_context_mask, context, *[ctypes.byref(s) for s in sizes], mask.ctypes.data, mask.nbytes)
    return mask


_contexts = {}
_locks = {}  # per context: a context is used by one thread at a time (the library releases the GIL)
_ENGINES = {"cpu": L.ENGINE_CPU, "cuda": L.ENGINE_CUDA}


def _context(comm, threads, backend="cpu"):
    """The library context for (comm, threads, backend), made once per process: over a duplicate of comm's
    MPI communicator, or over this process alone. A communicator freed and another made at the same handle
    would reuse the old duplicate: free contexts with `release(comm)` before freeing a communicator."""
    handle = 0 if comm is None else _handle(comm)
    threads = threads or _default_threads()
    flags = L.CONTEXT_TRACE if os.environ.get("SPARGE_CUDA_TRACE") == "1" else 0
    key = (handle, threads, backend, flags)
    if key not in _contexts:
        pointer = ctypes.c_void_p()
        device = _local_gpu() if backend == "cuda" else 0
        L.call(L.library().sparge_context_create, handle, threads, _ENGINES[backend], device, flags,
               ctypes.byref(pointer))
        _contexts[key] = pointer
        _locks[pointer.value] = threading.Lock()
    return _contexts[key]


def _local_gpu():
    """This process's node-local rank modulo the GPUs PyTorch sees (the rank alone without PyTorch)."""
    local = int(os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK") or os.environ.get("MPI_LOCALRANKID") or 0)
    try:
        import torch
        count = torch.cuda.device_count()
    except ImportError:
        count = 0
    return local % count if count else local


def release(comm=None):
    """Frees the library's contexts over `comm` (collective over it), and what they keep between calls
    (on the CPU, the fp32 copies of the last call's Q and K); the next call makes a new one."""
    handle = 0 if comm is None else _handle(comm)
    for key in [key for key in _contexts if key[0] == handle]:
        pointer = _contexts.pop(key)
        with _locks.pop(pointer.value):
            L.library().sparge_context_destroy(pointer)


def _handle(comm):
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise SpargeError(f"comm given but mpi4py cannot be imported ({e})") from None
    if not isinstance(comm, MPI.Comm):
        raise SpargeError(f"comm must be an mpi4py communicator, not {type(comm).__name__}")
    return MPI._handleof(comm)


def _default_threads():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = int(os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE") or os.environ.get("MPI_LOCALNRANKS") or 1)
    return max(1, cores // max(1, local))


def _ranges(seq_len, ranks, rank, is_causal):
    """This rank's token ranges [(start, end), …] for a sequence of seq_len tokens (the library's layout)."""
    params = L.Params()
    _fill(params, is_causal, None, 0.6, 0.98, None, 50, False, None, None, None, False)
    pairs = (ctypes.c_int64 * 4)()
    count = ctypes.c_int32()
    L.call(L.library().sparge_shard_ranges, seq_len, ranks, rank, ctypes.byref(params), pairs, 2,
           ctypes.byref(count))
    return [(pairs[2 * i], pairs[2 * i + 1]) for i in range(count.value)]


def _take(x, ranges, seq_dim):
    """The rows `ranges` of x along seq_dim, concatenated into a new contiguous array."""
    index = [slice(None)] * len(x.shape)
    parts = []
    for start, end in ranges:
        index[seq_dim] = slice(start, end)
        parts.append(x[tuple(index)])
    if is_torch(x):
        import torch
        return torch.cat(parts, dim=seq_dim).contiguous() if parts else x[tuple(index)][:0].clone()
    import numpy
    return numpy.ascontiguousarray(numpy.concatenate(parts, axis=seq_dim)) if parts else x[tuple(index)][:0].copy()


def shard(x, comm, is_causal=False, seq_dim=2):
    """This rank's rows of the full sequence x along seq_dim (2 for HND, 1 for NHD), in the library's
    shard layout: contiguous blocks, zigzag when is_causal. A new contiguous array of x's kind."""
    if comm is None:
        return x
    seq_dim = seq_dim % len(x.shape)
    return _take(x, _ranges(int(x.shape[seq_dim]), comm.Get_size(), comm.Get_rank(), is_causal), seq_dim)


def unshard(x_local, comm, is_causal=False, seq_dim=2):
    """The full sequence, on every rank, from every rank's shard (collective): the inverse of `shard`.
    The result is of x_local's kind, dtype and device."""
    if comm is None:
        return x_local
    try:
        host, back = to_numpy(x_local)
        seq_dim = seq_dim % host.ndim
        mine, problem = host, None
    except Exception as e:  # every rank must still take part in the gather
        mine, problem, back = None, f"{describe('x_local', x_local)}: {e}", None
    gathered = comm.allgather((mine, problem))
    failed = [(r, p) for r, (_, p) in enumerate(gathered) if p]
    if failed:
        raise SpargeError(f"unshard: rank {failed[0][0]}: {failed[0][1]}")
    parts = [part for part, _ in gathered]
    shapes = [tuple(p.shape[:seq_dim] + p.shape[seq_dim + 1:]) + (str(p.dtype),) for p in parts]
    if any(s != shapes[0] for s in shapes):
        raise SpargeError(f"unshard: the ranks' shards differ beyond axis {seq_dim}: "
                          + ", ".join(f"rank {r} {list(p.shape)} {p.dtype}" for r, p in enumerate(parts)))
    import numpy
    seq_len = sum(p.shape[seq_dim] for p in parts)
    shape = list(parts[0].shape)
    shape[seq_dim] = seq_len
    full = numpy.empty(shape, dtype=parts[0].dtype)
    index = [slice(None)] * len(shape)
    for rank, part in enumerate(parts):
        ranges = _ranges(seq_len, len(parts), rank, is_causal)
        if sum(e - s for s, e in ranges) != part.shape[seq_dim]:
            raise SpargeError(f"unshard: rank {rank} gave {part.shape[seq_dim]} rows along axis {seq_dim}; the "
                              f"layout of {seq_len} tokens gives it {sum(e - s for s, e in ranges)}")
        at = 0
        for start, end in ranges:
            index[seq_dim] = slice(start, end)
            source = [slice(None)] * len(shape)
            source[seq_dim] = slice(at, at + end - start)
            full[tuple(index)] = part[tuple(source)]
            at += end - start
    return back(full)
