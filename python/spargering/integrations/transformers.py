"""spargering.attention as an attention implementation of Hugging Face transformers.

    import spargering.integrations.transformers as st
    st.register("sparge", cdfthreshd=0.98)
    model = AutoModel.from_pretrained(path, attn_implementation="sparge")

Masks: a layer is causal when its module says so (`module.is_causal`); a padding mask (the valid tokens of
each sequence one contiguous run, as right or left padding gives) is honoured by computing each sequence
over its valid tokens only, and its padded rows get 0. Other masks (packed sequences, arbitrary patterns)
raise SpargeError. Dropout is not applied (inference only).
"""
from .. import attention
from .._library import SpargeError


def register(name="sparge", **params):
    """Registers `name` as an attention implementation that calls `spargering.attention(..., **params)`
    (upstream's argument names: cdfthreshd, topk, simthreshd1, pvthreshd, comm, …), with the boolean
    padding masks of "sdpa". Returns the attention function."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    def sparge_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        causal = bool(getattr(module, "is_causal", False)) and query.shape[2] > 1
        out = _attend(query, key, value, attention_mask, causal, scaling, params)
        return out.transpose(1, 2).contiguous(), None  # [B, N, H, D], as transformers expects

    AttentionInterface.register(name, sparge_attention)
    AttentionMaskInterface.register(name, sdpa_mask)
    return sparge_attention


def _attend(query, key, value, mask, causal, scale, params):
    """query [B, Hq, N, D]; key, value [B, Hkv, N, D]; mask None or boolean [B, 1, N, N] (True = attend)."""
    runs = _valid_runs(mask, key.shape[2]) if mask is not None else None
    if runs is None or all(run == (0, key.shape[2]) for run in runs):
        return attention(query, key, value, is_causal=causal, scale=scale, **params)
    import torch
    out = torch.zeros_like(query)
    for b, (start, end) in enumerate(runs):
        if end > start:
            rows = slice(start, end)
            out[b:b + 1, :, rows] = attention(query[b:b + 1, :, rows], key[b:b + 1, :, rows],
                                              value[b:b + 1, :, rows], is_causal=causal, scale=scale, **params)
    return out


def _valid_runs(mask, length):
    """Per sequence, the (start, end) of its valid keys, or SpargeError when they are not one run."""
    import torch
    if mask.dtype != torch.bool:
        raise SpargeError(f"attention mask of dtype {mask.dtype}: the sparge implementation takes the boolean "
                          "masks of 'sdpa' (register() sets that up)")
    valid = mask.any(dim=-2).reshape(mask.shape[0], -1)[:, :length]
    runs = []
    for b in range(valid.shape[0]):
        where = torch.nonzero(valid[b]).flatten().tolist()
        start, end = (where[0], where[-1] + 1) if where else (0, 0)
        if end - start != len(where):
            raise SpargeError(f"attention mask of sequence {b}: its valid tokens are not one contiguous run "
                              "(only padding masks are supported)")
        runs.append((start, end))
    return runs
