"""`pool_special_tokens=True` at unit level: special tokens and chain separators become units in sequence order, so
a model pools exactly the tokens the study's reference pools."""

import pytest
import torch
from test_paper_parity import reference_convbert, reference_pool

from hf_metaembed import (
    MetaEmbedConfig,
    MetaEmbedForSequenceClassification,
    MetaEmbedForTokenClassification,
    MetaEmbedProcessor,
)
from hf_metaembed.modeling.special_units import with_special_units


def test_special_tokens_get_units_at_canonical_places_shared_by_every_backbone():
    # backbone 0 (ESM-like): <cls> A B <eos> C <eos>; backbone 1 (T5-like, no start token): A B </s> C </s> <pad>
    token_unit_index = torch.tensor([[[-1, 0, 1, -1, 2, -1], [0, 1, -1, 2, -1, -1]]])
    attention_mask = torch.tensor([[[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]]])
    unit_mask = torch.tensor([[1, 1, 1, 0]])
    index, mask = with_special_units(token_unit_index, attention_mask, unit_mask)
    # units: [start] A B [boundary] C [end]
    assert index.tolist() == [[[0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, -1]]]
    assert mask.tolist() == [[1, 1, 1, 1, 1, 1]]


def test_padding_and_segments_of_different_lengths_stay_apart():
    token_unit_index = torch.tensor([[[-1, 0, -1, -1, -1]], [[-1, 0, 1, 2, -1]]])
    attention_mask = torch.tensor([[[1, 1, 1, 0, 0]], [[1, 1, 1, 1, 1]]])
    unit_mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    index, mask = with_special_units(token_unit_index, attention_mask, unit_mask)
    assert index.tolist() == [[[0, 1, 2, -1, -1]], [[0, 1, 2, 3, 4]]]
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_sc_pools_the_tokens_the_reference_pools(tiny_esm, pooling):
    """One ESM-style backbone: each residue and each special token is one unit, so the model equals the reference's
    ConvBERT over every kept token of the joined complex, pooled, then the output layer."""
    torch.manual_seed(0)
    model = MetaEmbedForSequenceClassification.from_backbones(
        [tiny_esm],
        fusion="concat",
        architecture="sc",
        preset="paper-2025-03-09",  # the reference config with ConvBERT
        pooling=pooling,
        pool_special_tokens=True,
        num_labels=1,
    )
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "backbone_" not in name:
                parameter.add_(0.3 * torch.randn_like(parameter))
    model.eval()
    processor = MetaEmbedProcessor.from_backbones([tiny_esm], architecture="sc")
    batch = processor(ligand=[["MKTAYIAK", "GSHM"]], receptor=[["MVLSPADK"]], return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
        tokens = model.metaembed.backbone_0(
            input_ids=batch["input_ids"][:, 0], attention_mask=batch["attention_mask"][:, 0]
        ).last_hidden_state
        assert int(batch["attention_mask"].sum()) == 8 + 4 + 8 + 4  # 20 residues, <cls>, two separators, <eos>
        pooled = reference_pool(
            model.metaembed.pairing.pooler, reference_convbert(model.metaembed.unit_encoder, tokens)
        )
        expected = model.classifier.out_proj(pooled)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


def test_two_backbones_train_with_special_units_and_reload(tiny_esm, tiny_prott5, tmp_path):
    backbones = [tiny_esm, tiny_prott5]
    model = MetaEmbedForSequenceClassification.from_backbones(
        backbones, architecture="hp", unit_encoder="convbert", pool_special_tokens=True, num_labels=1
    )
    processor = MetaEmbedProcessor.from_backbones(backbones, architecture="hp")
    batch = processor(
        ligand=[["MKTAYIAK", "GSHM"], ["MVLS"]], receptor=[["MVLSPADK"], ["GGAK", "KW"]], return_tensors="pt"
    )
    output = model(**batch, labels=torch.tensor([1.0, 2.0]))
    output.loss.backward()
    assert output.unit_mask.shape[1] == batch["unit_mask"].shape[1] + 2  # a start and an end unit per chain
    model.save_pretrained(tmp_path)
    reloaded = MetaEmbedForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model.eval()(**batch).logits, atol=0, rtol=0)


def test_token_classification_refuses_special_units(tiny_esm):
    config = MetaEmbedConfig.from_dict(
        MetaEmbedForSequenceClassification.from_backbones([tiny_esm], num_labels=2).config.to_dict()
        | {"pool_special_tokens": True}
    )
    with pytest.raises(ValueError, match="pool_special_tokens=False"):
        MetaEmbedForTokenClassification(config)


def test_the_feature_cache_refuses_special_units(tiny_esm):
    from hf_metaembed.cache import UncacheableModelError
    from hf_metaembed.cache.fingerprint import cacheable_base_model

    model = MetaEmbedForSequenceClassification.from_backbones([tiny_esm], pool_special_tokens=True, num_labels=1)
    with pytest.raises(UncacheableModelError, match="pool_special_tokens=True at level='unit'"):
        cacheable_base_model(model)
