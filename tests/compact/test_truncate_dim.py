"""`truncate_dim` and `normalize_embeddings` in the model: per call and at `from_pretrained` (issue 19, section 5)."""

import pytest
import torch

from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedModel, MetaEmbedProcessor
from hf_metaembed.compact import nested_prefix

PROTEINS = ["MKTAYIAKQRQISFVK", "GSHMVLSPAD", "MKVLA"]


@pytest.fixture(scope="module")
def pair(tiny_esm, tiny_prott5):
    return [tiny_esm, tiny_prott5]


def test_truncation_per_call_and_renormalisation(pair):
    model = MetaEmbedModel.from_backbones(pair, fusion="concat").eval()
    batch = MetaEmbedProcessor.from_backbones(pair)(PROTEINS)
    with torch.no_grad():
        full = model(**batch).pooler_output
        cut = model(**batch, truncate_dim=8).pooler_output
        model.config.normalize_embeddings = True
        normalised = model(**batch, truncate_dim=8).pooler_output
    assert full.shape == (3, 32)
    torch.testing.assert_close(cut, full[:, :8])
    torch.testing.assert_close(normalised, torch.nn.functional.normalize(full[:, :8], dim=-1))
    torch.testing.assert_close(normalised.norm(dim=-1), torch.ones(3))
    with pytest.raises(ValueError, match="truncate_dim must be from 1 to the pooled width 32, got 40"):
        model(**batch, truncate_dim=40)


def test_truncate_dim_at_from_pretrained_and_the_head_reads_the_prefix(pair, tmp_path):
    model = MetaEmbedForSequenceClassification.from_backbones(pair, fusion="concat", num_labels=2).eval()
    model.save_pretrained(tmp_path)
    batch = MetaEmbedProcessor.from_backbones(pair)(PROTEINS)
    truncated = MetaEmbedForSequenceClassification.from_pretrained(tmp_path, truncate_dim=4).eval()
    assert truncated.config.truncate_dim == 4
    with torch.no_grad():
        full = model(**batch)
        out = truncated(**batch)
        expected = model.classifier(nested_prefix(full.pooler_output, 4))
    assert out.pooler_output.shape == (3, 4)
    torch.testing.assert_close(out.logits, expected)
    with pytest.raises(ValueError, match="truncate_dim must be a positive integer or None, got 0"):
        MetaEmbedModel.from_backbones(pair, truncate_dim=0)
