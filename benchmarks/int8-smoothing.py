"""What smoothing K by which mean costs int8 Q·Kᵀ, on given inputs, in NumPy with float64 sums (no kernel):
the GPU's choice (the head's mean over the sequence, softmax-invariant), the CPU's (each block's own mean,
with its `q·μ_b` term exact), and the ways a tensor-core kernel could carry `q·μ_b` cheaply (μ_b, or its
difference from the head's mean, in int8 beside K).

    python3 int8-smoothing.py PREFIX [PREFIX ...]

PREFIX_q.npy, PREFIX_k.npy, PREFIX_v.npy: float32 [H, N, D] (`sparge bench-kernel --backend cpu --inputs-out
PREFIX`). Q is quantized per row, K per 128-key block after its smoothing, V rounded to fp16 (P·V as the GPU
runs it); relative L1 against float64 attention on the inputs, summed over heads; dense, non-causal.
"""
import sys
import numpy as np


def attention(q, k, v, scale):
    s = q @ k.T * scale
    p = np.exp(s - s.max(1, keepdims=True))
    return (p @ v) / p.sum(1, keepdims=True)


def int8(x):
    """x quantized with one scale, max|x| / 127 (1 for zeros), round to nearest even."""
    scale = np.abs(x).max() / 127 or 1.0
    return np.round(x / scale) * scale


def rows_int8(q):
    return np.stack([int8(row) for row in q])


def keys(k, block, mean_of):
    """K as the kernel sees it: per block, int8(k − μ_b) + the mean it carries back (`mean_of`)."""
    head = k.mean(0)
    out = np.empty_like(k)
    for s in range(0, len(k), block):
        b = k[s:s + block]
        mu, carried = mean_of(b, head)
        out[s:s + block] = int8(b - mu) + carried
    return out


SCHEMES = {
    "head mean (GPU)": lambda b, head: (head, head),
    "block mean, q·μ exact (CPU)": lambda b, head: (b.mean(0), b.mean(0)),
    "block mean, μ in int8": lambda b, head: (b.mean(0), int8(b.mean(0))),
    "block mean, μ − head mean in int8": lambda b, head: (b.mean(0), head + int8(b.mean(0) - head)),
    "block mean, μ − head mean in fp16": lambda b, head: (b.mean(0), head + (b.mean(0) - head).astype(np.float16)),
}

for prefix in sys.argv[1:]:
    q, k, v = [np.load(f"{prefix}_{name}.npy").astype(np.float64) for name in "qkv"]
    scale = 1 / np.sqrt(q.shape[2])
    totals = {name: [0.0, 0.0] for name in SCHEMES}
    for h in range(q.shape[0]):
        exact = attention(q[h], k[h], v[h], scale)
        qq, vv = rows_int8(q[h]), v[h].astype(np.float16).astype(np.float64)
        for name, mean_of in SCHEMES.items():
            out = attention(qq, keys(k[h], 128, mean_of), vv, scale)
            totals[name][0] += np.abs(out - exact).sum()
            totals[name][1] += np.abs(exact).sum()
    print(prefix, {name: f"{a / b:.2e}" for name, (a, b) in totals.items()})
