"""The CUDA-tensor check shared by test_attention.py (pytest) and benchmarks/gpu-python.py (plain Python on
GPU machines without pytest): bf16 CUDA tensors in (HND and NHD, GQA, B = 2, causal), CUDA tensors out,
against the CPU on the same bf16 values."""


def cuda_against_cpu(np, torch, spargering, smooth):
    """Per layout: (layout, output on q's device in q's dtype and shape, masks equal, relative L1 of the
    output to the CPU's)."""
    rng = np.random.default_rng(4)
    results = []
    for layout in ("HND", "NHD"):
        host = [smooth(np, rng, (2, h, 1000, 64)) for h in (4, 2, 2)]
        host = [torch.from_numpy(x).to(torch.bfloat16) for x in host]
        if layout == "NHD":
            host = [x.transpose(1, 2).contiguous() for x in host]
        device = [x.cuda() for x in host]
        kwargs = dict(tensor_layout=layout, is_causal=True, cdfthreshd=0.9, return_mask=True)
        gpu, gpu_mask = spargering.attention(*device, **kwargs)
        cpu, cpu_mask = spargering.attention(*host, **kwargs)
        placed = gpu.device == device[0].device and gpu.dtype == torch.bfloat16 and gpu.shape == device[0].shape
        error = float((gpu.float().cpu() - cpu.float()).abs().sum() / cpu.float().abs().sum())
        results.append((layout, placed, bool(np.array_equal(cpu_mask, gpu_mask)), error))
    return results
