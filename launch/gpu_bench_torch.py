#!/usr/bin/env python3
"""PyTorch's attention on the shapes and masks `sparge bench-kernel` timed: the yardstick for the CUDA backend.

    python3 launch/gpu_bench_torch.py --seq 32768 --heads 8 --head-dim 128 [--mask M.npy --block-q 128 --block-k 64]

Times, on random bf16 inputs [1, H, N, D] (never zeros), with triton's do_bench (median, device events):
  - scaled_dot_product_attention with the flash backend and with the cuDNN backend (dense);
  - FlexAttention (torch.compile) on each mask given with --mask (a uint8 [H, nq, nk] block mask written by
    `sparge bench-kernel --mask-out`), built directly from its block lists, so the same blocks are computed;
  - FlexAttention dense (every block), for its own dense rate.
Real FLOPs count 4·D·rows·keys over the computed blocks, diagonal blocks whole: the same count as
bench-kernel's, so the TFLOP/s columns compare directly. One JSON object per line, then a table.
"""
import argparse
import json
import sys

import numpy as np
import torch
import torch.nn.functional as F
from triton.testing import do_bench


def timed(fn):
    fn()
    torch.cuda.synchronize()
    return do_bench(fn, warmup=25, rep=200, return_mode="median")


def mask_flops(mask, n, d, bq, bk):
    rows = np.minimum(bq, n - np.arange(mask.shape[1]) * bq).astype(np.float64)
    keys = np.minimum(bk, n - np.arange(mask.shape[2]) * bk).astype(np.float64)
    return 4.0 * d * float(np.einsum("hij,i,j->", mask.astype(np.float64), rows, keys))


def flex_block_mask(mask, n, bq, bk, causal, device):
    """A FlexAttention BlockMask computing exactly the blocks of `mask` (full blocks; diagonal ones partial)."""
    from torch.nn.attention.flex_attention import BlockMask

    h, nq, nk = mask.shape
    m = torch.from_numpy(mask.astype(np.bool_)).to(device)
    qi = torch.arange(nq, device=device).view(nq, 1)
    kj = torch.arange(nk, device=device).view(1, nk)
    if causal:
        full = m & ((kj + 1) * bk - 1 <= qi * bq)  # every key of the block precedes the block's first query
        part = m & ~full
    else:
        full, part = m, torch.zeros_like(m)

    def lists(b):
        counts = b.sum(-1).to(torch.int32)
        order = torch.argsort((~b).to(torch.int8), dim=-1, stable=True).to(torch.int32)
        return counts.view(1, h, nq).contiguous(), order.view(1, h, nq, nk).contiguous()

    kv_num, kv_idx = lists(part)
    full_num, full_idx = lists(full)

    def causal_mod(b, hh, q_idx, kv_idx_):
        return q_idx >= kv_idx_

    def noop(b, hh, q_idx, kv_idx_):
        return q_idx >= 0

    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=(bq, bk),
                                    mask_mod=causal_mod if causal else noop, seq_lengths=(n, n))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seq", type=int, default=32768)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--causal", action="store_true")
    p.add_argument("--mask", action="append", default=[], help="FILE.npy[:BQ:BK] (default block sizes 128:64)")
    a = p.parse_args()
    dev = "cuda"
    n, h, d = a.seq, a.heads, a.head_dim
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, N {n}, heads {h}, D {d}, "
          f"{'causal' if a.causal else 'non-causal'}", flush=True)
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, h, n, d, device=dev, dtype=torch.bfloat16) for _ in range(3))
    dense_flops = 4.0 * n * n * d * h / (2 if a.causal else 1)
    rows = []

    def report(name, ms, flops, density, extra=None):
        r = {"name": name, "ms": ms, "tflops_real": flops / ms / 1e9, "tflops_dense_equiv": dense_flops / ms / 1e9,
             "density": density}
        r.update(extra or {})
        rows.append(r)
        print(json.dumps(r), flush=True)

    from torch.nn.attention import SDPBackend, sdpa_kernel
    for name, backend in [("sdpa flash", SDPBackend.FLASH_ATTENTION), ("sdpa cudnn", SDPBackend.CUDNN_ATTENTION)]:
        try:
            with sdpa_kernel(backend):
                ms = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=a.causal))
            report(name, ms, dense_flops, 1.0)
        except Exception as e:  # a backend missing on this build: say so, go on
            print(f"{name}: unavailable: {str(e).splitlines()[0]}", flush=True)

    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    flex = torch.compile(flex_attention, dynamic=False)
    try:
        if a.causal:
            bm = create_block_mask(lambda b, hh, qi, kj: qi >= kj, 1, h, n, n, device=dev)
        else:
            bm = create_block_mask(lambda b, hh, qi, kj: qi >= 0, 1, h, n, n, device=dev)
        ms = timed(lambda: flex(q, k, v, block_mask=bm))
        report("flex dense 128x128", ms, dense_flops, 1.0)
    except Exception as e:
        print(f"flex dense: failed: {str(e).splitlines()[0]}", flush=True)

    for spec in a.mask:
        parts = spec.split(":")
        path = parts[0]
        bq, bk = (int(parts[1]), int(parts[2])) if len(parts) == 3 else (128, 64)
        mask = np.load(path)
        assert mask.shape[0] == h, f"{path}: mask for {mask.shape[0]} heads, benchmark has {h}"
        flops = mask_flops(mask, n, d, bq, bk)
        density = flops / (4.0 * n * n * d * h)
        bm = flex_block_mask(mask, n, bq, bk, a.causal, dev)
        for opts in [None, {"BLOCK_M": bq, "BLOCK_N": bk}, {"BLOCK_M": 64, "BLOCK_N": 64}]:
            try:
                ms = timed(lambda: flex(q, k, v, block_mask=bm, kernel_options=opts))
                report(f"flex {path.split('/')[-1]} {bq}x{bk}", ms, flops, density, {"kernel_options": str(opts)})
                break
            except Exception as e:
                print(f"flex on {path} with kernel_options {opts}: failed: {str(e).splitlines()[0]}", flush=True)

    print(f"{'what':40s} {'ms':>9s} {'TFLOP/s real':>13s} {'dense-eq':>9s} {'density':>8s}")
    for r in rows:
        print(f"{r['name']:40s} {r['ms']:9.3f} {r['tflops_real']:13.1f} {r['tflops_dense_equiv']:9.1f} {r['density']:8.4f}")


if __name__ == "__main__":
    sys.exit(main())
