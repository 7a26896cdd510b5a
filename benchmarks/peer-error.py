"""The peer's error (upstream SpargeAttn's INT8 Q·Kᵀ / FP8 P·V kernel, all blocks computed) on given inputs,
beside which `sparge verify --precision int8 --dense` reports ours on the same files.

    python3 peer-error.py --dir /tmp/spargeattn PREFIX [PREFIX ...]

PREFIX_q.npy, PREFIX_k.npy, PREFIX_v.npy: float32 [H, N, D] (`sparge bench-kernel --inputs-out PREFIX`).
The peer takes them as bf16 [1, H, N, D] (its input type); its output is compared, relative L1, with
attention computed in float64 on those bf16 values, and with float32 PyTorch SDPA on them (the peer's own
script's reference). One JSON line per PREFIX.
"""
import argparse, json, os, sys
import numpy as np, torch

p = argparse.ArgumentParser()
p.add_argument("--dir", default="/tmp/spargeattn")
p.add_argument("prefixes", nargs="+")
a = p.parse_args()
sys.path.insert(0, a.dir)
sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers", "site"))
import spas_sage_attn as sa


def relative_l1(x, reference):
    return float((x.double() - reference).abs().sum() / reference.abs().sum())


for prefix in a.prefixes:
    q, k, v = [torch.from_numpy(np.load(f"{prefix}_{name}.npy")).cuda().to(torch.bfloat16)[None] for name in "qkv"]
    _, heads, n, d = q.shape
    ones = torch.ones(1, heads, -(-n // 64), -(-n // 128), dtype=torch.int32, device="cuda")
    out = sa.block_sparse_sage2_attn_cuda(q, k, v, mask_id=ones).float()
    exact = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double())
    fp32 = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())
    print(json.dumps({"case": "peer error, all blocks", "inputs": os.path.basename(prefix), "heads": heads, "seq": n,
                      "head_dim": d, "rel_l1_vs_float64": relative_l1(out, exact),
                      "rel_l1_vs_float32_sdpa": relative_l1(out, fp32.double())}), flush=True)
