"""Test inputs, without pytest (mpi_ranks.py and benchmarks/gpu-python.py use them too)."""


def smooth(np, rng, shape, scale=1.0):
    """Inputs with structure along the sequence (axis 2 of [B, H, N, D]): a random walk plus noise, so
    that blocks are self-similar and the mask sparse, as in real attention; never zeros. float32."""
    walk = np.cumsum(rng.standard_normal(shape), axis=2) / np.sqrt(shape[2])
    return ((walk * 4 + 0.5 * rng.standard_normal(shape)) * scale).astype(np.float32)
