"""The hierarchical-pooling combination of the two sides under the study's reference name (`aggregation_method`,
stored as `side_combine`): concat [l; r], mean (l + r) / 2 and add l + r, checked against those equations with the
model's own weights, then saved and reloaded."""

import json

import pytest
import torch

from hf_metaembed import MetaEmbedConfig, MetaEmbedForSequenceClassification, MetaEmbedProcessor

LIGANDS = [["MKTAYIAKQR", "GSHMLE"], ["MVLSPADKTN"]]
RECEPTORS = [["MKVLAAGIVG"], ["GGSAAKWEEL", "MKTWAKLHEV"]]
COMBINE = {
    "concat": lambda ligand, receptor: torch.cat([ligand, receptor], dim=-1),
    "mean": lambda ligand, receptor: (ligand + receptor) / 2,
    "add": lambda ligand, receptor: ligand + receptor,
}


def attention_pool(pooler, states: torch.Tensor) -> torch.Tensor:
    """softmax over positions of the learned score w . x + b, then the weighted sum (rows all real)."""
    weights = torch.softmax(pooler.score(states).squeeze(-1), dim=-1)
    return weights @ states


def build(tiny_esm: str, **settings) -> MetaEmbedForSequenceClassification:
    torch.manual_seed(0)
    model = MetaEmbedForSequenceClassification.from_backbones(
        [tiny_esm], fusion="concat", architecture="hp", pooling="attention", num_labels=1, **settings
    )
    with torch.no_grad():  # off their initial values, so no score or bias is trivially zero
        for name, parameter in model.named_parameters():
            if "backbone_" not in name:
                parameter.add_(0.3 * torch.randn_like(parameter))
    return model.eval()


@pytest.fixture(scope="module")
def batch(tiny_esm):
    return MetaEmbedProcessor.from_backbones([tiny_esm], architecture="hp")(
        ligand=LIGANDS, receptor=RECEPTORS, return_tensors="pt"
    )


@pytest.mark.parametrize("method", ["concat", "mean", "add"])
def test_each_aggregation_method_is_its_equation(tiny_esm, batch, method):
    model = build(tiny_esm, aggregation_method=method, hp_separate_side_poolers=True)
    assert model.config.side_combine == method and "aggregation_method" not in model.config.to_dict()
    pairing = model.metaembed.pairing
    with torch.no_grad():
        base = model.metaembed(**batch)
        logits = model(**batch).logits
        expected = []
        for sample in range(len(LIGANDS)):
            sides = []
            for side, (residue_pooler, chain_pooler) in enumerate(
                [(pairing.pooler, pairing.chain_pooler), (pairing.receptor_pooler, pairing.receptor_chain_pooler)]
            ):
                rows = (batch["segment_sample_index"] == sample) & (batch["segment_side_index"] == side)
                chains = [
                    attention_pool(residue_pooler, states[mask.bool()])
                    for states, mask in zip(base.last_hidden_state[rows], base.unit_mask[rows])
                ]
                sides.append(attention_pool(chain_pooler, torch.stack(chains)))
            combined = COMBINE[method](*sides)
            ffn = pairing.feed_forward
            expected.append(ffn[2](torch.nn.functional.silu(ffn[0](combined))))
        expected = torch.stack(expected)
    assert expected.shape == (2, 32 if method == "concat" else 16)
    torch.testing.assert_close(base.pooler_output, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits, model.classifier.out_proj(expected), atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["mean", "add"])
def test_the_reference_name_builds_the_same_model_and_survives_a_save(tiny_esm, batch, method, tmp_path):
    by_alias, by_name = build(tiny_esm, aggregation_method=method), build(tiny_esm, side_combine=method)
    assert by_alias.config.to_dict() == by_name.config.to_dict()
    with torch.no_grad():
        logits = by_alias(**batch).logits
        torch.testing.assert_close(logits, by_name(**batch).logits, atol=0, rtol=0)
        other = build(tiny_esm, aggregation_method="concat")(**batch).logits
    assert not torch.allclose(logits, other)  # the setting reaches the model
    by_alias.save_pretrained(tmp_path)
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["side_combine"] == method and "aggregation_method" not in stored
    reloaded = MetaEmbedForSequenceClassification.from_pretrained(tmp_path).eval()
    assert reloaded.config.side_combine == method
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, logits, atol=1e-6, rtol=0)


def test_the_two_names_disagreeing_or_a_bad_value_are_refused():
    with pytest.raises(ValueError, match="aggregation_method='mean' and side_combine='add' name the same setting"):
        MetaEmbedConfig(architecture="hp", aggregation_method="mean", side_combine="add")
    with pytest.raises(ValueError, match="unknown side_combine 'max'; choose one of: concat, add, mean"):
        MetaEmbedConfig(architecture="hp", aggregation_method="max")
    # given once, the reference's name wins over a preset as any explicit setting does
    assert MetaEmbedConfig(architecture="hp", preset="paper", aggregation_method="add").side_combine == "add"
