"""The pooling menu added for issue 19 (gated_mean, latent_attention), each against its definition, masked, and
correct under left and right padding."""

import pytest
import torch

from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedModel, MetaEmbedProcessor
from hf_metaembed.modeling.pooling import build_pooler


def padded(states: torch.Tensor, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One row of `(length, dim)` states padded with 2 garbage positions on the left or the right."""
    garbage = torch.full((2, states.shape[1]), 7.0)
    rows = torch.cat([garbage, states]) if left else torch.cat([states, garbage])
    mask = (
        torch.cat([torch.zeros(2), torch.ones(len(states))])
        if left
        else torch.cat([torch.ones(len(states)), torch.zeros(2)])
    )
    return rows.unsqueeze(0), mask.unsqueeze(0)


def test_gated_mean_follows_its_definition():
    pooler = build_pooler("gated_mean", 4)
    states = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        gates = torch.sigmoid(states @ pooler.gate.weight[0] + pooler.gate.bias)
        expected = (gates.unsqueeze(-1) * states).sum(0) / 3
        for left in (False, True):
            pooled, weights = pooler(*padded(states, left))
            torch.testing.assert_close(pooled[0], expected)
            assert float(weights[0].sum()) == pytest.approx(float(gates.sum() / 3), rel=1e-5)


def test_latent_attention_follows_its_definition():
    torch.manual_seed(0)
    pooler = build_pooler("latent_attention", 8).eval()
    pooler.init_block_weights()
    states = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        latent = pooler.latent_array.unsqueeze(0)
        attended, _ = pooler.attention(states.unsqueeze(0), latent, latent)
        expected = (attended + pooler.mlp(attended))[0].mean(0)
        for left in (False, True):
            pooled, _ = pooler(*padded(states, left))
            torch.testing.assert_close(pooled[0], expected, atol=1e-5, rtol=1e-5)
    assert pooler.latent_array.shape == (32, 8) and pooler.attention.num_heads == 8


@pytest.mark.parametrize("pooling", ["gated_mean", "latent_attention"])
def test_new_poolings_train_in_a_model(pooling, tiny_esm, tiny_prott5):
    model = MetaEmbedModel.from_backbones([tiny_esm, tiny_prott5], fusion="mean", pooling=pooling)
    batch = MetaEmbedProcessor.from_backbones([tiny_esm, tiny_prott5])(["MKTAYIAK", "GSH"])
    model(**batch).pooler_output.pow(2).sum().backward()
    pooler_parameters = [p for n, p in model.named_parameters() if "pool" in n and p.requires_grad]
    assert pooler_parameters and all(p.grad is not None for p in pooler_parameters)


def test_mean_max_concatenates_both_poolings_and_widens_the_head(tiny_esm, tiny_prott5):
    pooler = build_pooler("mean_max", 4)
    states, mask = padded(torch.randn(3, 4, generator=torch.Generator().manual_seed(2)), left=True)
    pooled, _ = pooler(states, mask)
    real = states[0, 2:]
    torch.testing.assert_close(pooled[0], torch.cat([real.mean(0), real.max(0).values]))
    pair = [tiny_esm, tiny_prott5]
    model = MetaEmbedForSequenceClassification.from_backbones(pair, fusion="mean", pooling="mean_max", num_labels=2)
    batch = MetaEmbedProcessor.from_backbones(pair)(["MKTAYIAK", "GSH"])
    out = model(**batch)
    assert out.pooler_output.shape == (2, 32) and out.logits.shape == (2, 2)
    with pytest.raises(ValueError, match="pooling 'mean_max' concatenates mean, max into a wider vector"):
        MetaEmbedModel.from_backbones(pair, pooling="mean_max", architecture="ec")


def test_each_backbone_pools_its_tokens_as_chosen_at_sequence_level(tiny_esm, tiny_prott5, tmp_path):
    """`backbone_poolings=["cls", "max"]`: backbone 0 keeps its first kept token, backbone 1 the element-wise max."""
    pair = [tiny_esm, tiny_prott5]
    model = MetaEmbedModel.from_backbones(
        pair, level="sequence", fusion="concat", backbone_poolings=["cls", "max"], pool_special_tokens=True
    ).eval()
    assert model.config.backbone_poolings == ["cls", "max"]
    assert [record["pooling"] for record in model.config.backbones] == ["cls", "max"]
    processor = MetaEmbedProcessor.from_backbones(pair)
    batch = processor(["MKTAYIAK", "GSH"])
    with torch.no_grad():
        out = model(**batch, output_backbone_states=True)
        tokens = [
            backbone(
                input_ids=batch["input_ids"][:, i], attention_mask=batch["attention_mask"][:, i]
            ).last_hidden_state
            for i, backbone in enumerate(model.backbones)
        ]
    first, second = out.backbone_states
    torch.testing.assert_close(first[:, 0], tokens[0][:, 0], atol=1e-5, rtol=0)  # <cls> of each sequence
    mask = batch["attention_mask"][:, 1].bool().unsqueeze(-1)
    expected_max = tokens[1].masked_fill(~mask, float("-inf")).max(dim=1).values
    torch.testing.assert_close(second[:, 0], expected_max, atol=1e-5, rtol=0)
    model.save_pretrained(tmp_path / "saved")
    reloaded = MetaEmbedModel.from_pretrained(tmp_path / "saved").eval()
    assert reloaded.config.backbone_poolings == ["cls", "max"]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).pooler_output, out.pooler_output)
    assert model.reader.describe()["backbone_poolings"] == ["cls", "max"]  # part of the cache fingerprint


def test_a_pooling_per_backbone_is_refused_where_it_cannot_apply(tiny_esm, tiny_prott5):
    pair = [tiny_esm, tiny_prott5]
    with pytest.raises(ValueError, match=r"backbone_poolings\[0\]='cls' .* level='unit' pools the fused units"):
        MetaEmbedModel.from_backbones(pair, backbone_poolings=["cls", None])
    with pytest.raises(ValueError, match=r"backbone_poolings\[1\]='mean_max' makes a wider vector"):
        MetaEmbedModel.from_backbones(pair, level="sequence", backbone_poolings=[None, "mean_max"])
    with pytest.raises(ValueError, match=r"unknown pooling 'median'"):
        MetaEmbedModel.from_backbones(pair, level="sequence", backbone_poolings=["median", None])
