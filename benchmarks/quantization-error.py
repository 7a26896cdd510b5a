#!/usr/bin/env python3
"""What SageAttention-style quantization costs, in NumPy with exact sums (no kernel's rounding of its own), on
the MiniLM fixtures and random inputs: the error (relative L1 against float64 attention) of
  - int8 Q·Kᵀ with K smoothed by its block's mean (the CPU's `--precision int8`: Q per row, K per 64-key
    block, the mean's term q·μ added back),
  - int8 Q·Kᵀ with K smoothed by its head's mean (SageAttention's: a per-row constant, which the softmax
    drops; what the Hopper kernel's QK_INT8 computes),
  - e4m3 P·V (P scaled by 256, V per column, as the Hopper kernel's PV_FP8), alone and with the latter.
Usage: python3 benchmarks/quantization-error.py [FIXTURES]   (FIXTURES default ../shared/fixtures)
"""
import os
import sys

import numpy as np


def attention(q, k, v):
    s = q @ k.T / np.sqrt(q.shape[1])
    p = np.exp(s - s.max(1, keepdims=True))
    return (p @ v) / p.sum(1, keepdims=True)


def int8_scores(q, k, smoothing, block=64):
    """Q·Kᵀ from int8 Q (per row) and int8 K − μ (per block): μ the block's mean or the head's."""
    sq = np.abs(q).max(1, keepdims=True) / 127
    sq[sq == 0] = 1
    nq = np.rint(q / sq)
    s = np.empty((q.shape[0], k.shape[0]))
    head_mean = k.mean(0)
    for b in range(0, k.shape[0], block):
        kb = k[b:b + block]
        mu = kb.mean(0) if smoothing == "block" else head_mean
        sk = np.abs(kb - mu).max() / 127 or 1.0
        s[:, b:b + block] = sq * sk * (nq @ np.rint((kb - mu) / sk).T)
        if smoothing == "block":  # the head's mean shifts a row by a constant: the softmax does not see it
            s[:, b:b + block] += (sq * nq) @ mu[:, None]
    return s


E4M3 = np.array(sorted((m / 8) * 2.0 ** -6 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7)
                       for e in range(16) for m in range(8) if not (e == 15 and m == 7)))


def e4m3(x):
    """Round to the nearest e4m3 value (saturating at ±448)."""
    a = np.minimum(np.abs(x), 448.0)
    i = np.clip(np.searchsorted(E4M3, a), 1, len(E4M3) - 1)
    lo, hi = E4M3[i - 1], E4M3[i]
    return np.sign(x) * np.where(a - lo <= hi - a, lo, hi)


def quantized_attention(q, k, v, smoothing, fp8_values):
    s = (int8_scores(q, k, smoothing) if smoothing else q @ k.T) / np.sqrt(q.shape[1])
    p = np.exp(s - s.max(1, keepdims=True))
    if fp8_values:
        sv = np.abs(v).max(0) / 448
        sv[sv == 0] = 1
        o = (e4m3(p * 256) @ e4m3(v / sv)) * sv / 256
    else:
        o = p @ v
    return o / p.sum(1, keepdims=True)


def main():
    fixtures = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "../../shared/fixtures")
    rng = np.random.default_rng(0)
    cases = {}
    for layer in range(3):
        path = os.path.join(fixtures, "minilm", f"layer{layer}_%s.npy")
        if os.path.exists(path % "q"):
            q, k, v = (np.load(path % x).astype(np.float64) for x in "qkv")
            cases[f"MiniLM layer {layer} ({q.shape[0]} heads, {q.shape[1]} tokens, D {q.shape[2]})"] = list(zip(q, k, v))
    for name, offset in (("random, N 2048, D 128", None), ("random, K with one offset for all keys", 3.0),
                         ("random, K's mean drifting along the sequence", "drift")):
        heads = []
        for _ in range(2):
            q, k, v = (rng.standard_normal((2048, 128)) for _ in range(3))
            if offset == "drift":
                k += np.linspace(0, 3, 2048)[:, None] * rng.standard_normal(128)[None, :]
            elif offset:
                k += offset * rng.standard_normal(128)[None, :]
            heads.append((q, k, v))
        cases[name] = heads
    variants = (("int8, block mean", "block", False), ("int8, head mean", "head", False),
                ("e4m3 P·V", None, True), ("int8 head mean + e4m3", "head", True))
    print("| inputs | " + " | ".join(v[0] for v in variants) + " |")
    print("| --- |" + " --- |" * len(variants))
    for name, heads in cases.items():
        refs = [attention(*h) for h in heads]
        errors = []
        for _, smoothing, fp8 in variants:
            outs = [quantized_attention(*h, smoothing, fp8) for h in heads]
            errors.append(np.mean([np.abs(o - r).sum() / np.abs(r).sum() for o, r in zip(outs, refs)]))
        print(f"| {name} | " + " | ".join(f"{e:.2e}" for e in errors) + " |")


if __name__ == "__main__":
    main()
