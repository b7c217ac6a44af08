"""A fusion and a pair architecture registered from outside the package, as a user's own module would: they build,
train, save, reload and appear on the model card with no edit to hf_metaembed.

The blocks are defined and registered inside a fixture and popped from the registries afterwards, so every other test
module sees the built-in lists.
"""

import pytest
import torch
from torch import nn

from hf_metaembed import (
    MetaEmbedConfig,
    MetaEmbedForSequenceClassification,
    MetaEmbedProcessor,
    list_architectures,
    list_fusions,
)
from hf_metaembed.integrations.cards import render_model_card
from hf_metaembed.modeling.fusion import FUSIONS, Fusion
from hf_metaembed.modeling.pairing import PAIRINGS, Pairing, side_tensors
from hf_metaembed.modeling.pooling import build_pooler

LIGANDS = [["MKTAYIAKQR", "GSH"], ["WLLE"], ["ACDEFGHIK"]]
RECEPTORS = [["MVLSPADKTNVKAAW"], ["QQRRKK", "DE"], ["HHW"]]
LABELS = torch.tensor([7.5, 5.0, 9.25])
MAX_FUSION_TEXT = "Max fusion (a test block): projects every backbone and keeps the largest value of each feature."
SUM_SIDES_TEXT = (
    "Sum of sides (a test block): pools each side and adds the receptor's vector, weighted, to the ligand's."
)


@pytest.fixture(scope="module")
def external_blocks():
    """Register `max_fusion` and `sum_sides` the way a user's module would; pop them again afterwards."""
    built_in = (list_fusions(), list_architectures())

    @FUSIONS.register("max_fusion")
    class MaxFusion(Fusion):
        """Element-wise maximum over the projected backbone states, times `maxfusion_scale`; a backbone's weight at a
        unit is the share of features where it held the maximum."""

        config_fields = {"maxfusion_scale": 1.0}
        card_text = MAX_FUSION_TEXT

        @classmethod
        def check_config(cls, config, dims: list[int]) -> None:
            scale = config.maxfusion_scale
            if isinstance(scale, bool) or not isinstance(scale, int | float) or scale <= 0:
                raise ValueError(f"maxfusion_scale must be a positive number, got {scale!r}")

        def __init__(self, config, input_dims: list[int]) -> None:
            super().__init__(config, input_dims)
            self.scale = config.maxfusion_scale
            self.projections = nn.ModuleList(nn.Linear(d, self.dim) for d in input_dims)

        def fuse(self, states, unit_mask):
            projected = torch.stack([proj(h) for proj, h in zip(self.projections, states)], dim=2)  # (b, u, n, d)
            fused, winner = projected.max(dim=2)
            weights = nn.functional.one_hot(winner, len(states)).to(fused.dtype).mean(dim=2)  # (b, u, n)
            return self.scale * fused, weights

    @PAIRINGS.register("sum_sides")
    class SumSides(Pairing):
        """Each side (chains joined) pooled; ligand + `sumsides_receptor_weight` x receptor, then a linear layer."""

        layout = "sides"
        config_fields = {"sumsides_receptor_weight": 1.0}
        card_text = SUM_SIDES_TEXT

        @classmethod
        def check_config(cls, config, dims: list[int]) -> None:
            super().check_config(config, dims)
            weight = config.sumsides_receptor_weight
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                raise ValueError(f"sumsides_receptor_weight must be a number, got {weight!r}")

        def __init__(self, config, dim: int) -> None:
            super().__init__(config, dim)
            self.receptor_weight = config.sumsides_receptor_weight
            self.pooler = build_pooler(config.pooling, dim)
            self.mix = nn.Linear(dim, dim)

        def pool(self, unit_states, unit_mask, samples, group):
            states, mask = side_tensors(unit_states, unit_mask, group, samples)  # (samples, 2, units, dim)
            pooled, _ = self.pooler(states.flatten(0, 1), mask.flatten(0, 1))
            sides = pooled.view(samples, 2, -1)
            return self.mix(sides[:, 0] + self.receptor_weight * sides[:, 1])

    yield MaxFusion, SumSides
    FUSIONS.pop("max_fusion")
    PAIRINGS.pop("sum_sides")
    assert (list_fusions(), list_architectures()) == built_in


@pytest.fixture(scope="module")
def backbones(tiny_esm, tiny_prott5) -> list[str]:
    return [tiny_esm, tiny_prott5]


def build(backbones, **settings) -> MetaEmbedForSequenceClassification:
    torch.manual_seed(0)
    return MetaEmbedForSequenceClassification.from_backbones(
        backbones, fusion="max_fusion", architecture="sum_sides", num_labels=1, **settings
    )


def test_registered_blocks_are_listed_with_their_settings(external_blocks):
    max_fusion, sum_sides = external_blocks
    assert list_fusions()[-1] == "max_fusion" and list_architectures()[-1] == "sum_sides"
    config = MetaEmbedConfig(fusion="max_fusion", architecture="sum_sides")
    assert config.blocks()["fusion"] is max_fusion and config.blocks()["architecture"] is sum_sides
    assert (config.maxfusion_scale, config.sumsides_receptor_weight) == (1.0, 1.0)  # the declared defaults
    assert config.pooling == "attention"  # a pair architecture's default pooling, inherited from Pairing
    # every config knows the new settings, whatever blocks it selects
    assert MetaEmbedConfig().maxfusion_scale == 1.0


def test_external_blocks_train_save_reload_and_appear_on_the_card(external_blocks, backbones, tmp_path):
    max_fusion, sum_sides = external_blocks
    model = build(backbones, maxfusion_scale=2.0)
    assert isinstance(model.metaembed.fusion, max_fusion) and isinstance(model.metaembed.pairing, sum_sides)
    assert model.config.maxfusion_scale == 2.0 and model.metaembed.fusion.scale == 2.0
    processor = MetaEmbedProcessor.from_backbones(backbones, architecture="sum_sides")
    batch = processor(ligand=LIGANDS, receptor=RECEPTORS)
    assert batch["segment_side_index"].tolist() == [0, 1, 0, 1, 0, 1]  # the processor read the block's layout

    model.train()
    output = model(**batch, labels=LABELS)
    assert output.logits.shape == (3, 1) and torch.isfinite(output.loss)
    output.loss.backward()
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    for prefix in ("metaembed.fusion.projections.", "metaembed.pairing.mix.", "metaembed.pairing.pooler."):
        reached = [name for name in trainable if name.startswith(prefix)]
        assert reached, prefix
        for name in reached:
            assert trainable[name].grad is not None and trainable[name].grad.abs().sum() > 0, name
    weights = output.fusion_weights[batch["unit_mask"].bool()]
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[0]))

    with torch.no_grad():  # off the initial values, so a reload that re-initialised anything would show
        for parameter in trainable.values():
            parameter.add_(0.3 * torch.randn_like(parameter))
    model.eval()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = MetaEmbedForSequenceClassification.from_pretrained(tmp_path).eval()
    assert (reloaded.config.fusion, reloaded.config.architecture) == ("max_fusion", "sum_sides")
    assert reloaded.config.maxfusion_scale == 2.0 and reloaded.metaembed.fusion.scale == 2.0
    reloaded_batch = MetaEmbedProcessor.from_pretrained(tmp_path)(ligand=LIGANDS, receptor=RECEPTORS)
    with torch.no_grad():
        expected = model(**batch).logits
        torch.testing.assert_close(reloaded(**reloaded_batch).logits, expected, atol=0, rtol=0)
        # the setting is used: the same weights with scale 1 give other outputs
        reloaded.metaembed.fusion.scale = 1.0
        assert not torch.allclose(reloaded(**reloaded_batch).logits, expected, atol=1e-4)

    # where the user's module was not imported, the checkpoint names the missing block instead of loading wrongly
    FUSIONS.pop("max_fusion")
    try:
        with pytest.raises(ValueError, match=r"unknown fusion 'max_fusion' \(config field `fusion`\); choose one of"):
            MetaEmbedForSequenceClassification.from_pretrained(tmp_path)
    finally:
        FUSIONS["max_fusion"] = max_fusion

    card = render_model_card(model).text
    assert "### fusion: `max_fusion`" in card and MAX_FUSION_TEXT in card
    assert "### architecture: `sum_sides`" in card and SUM_SIDES_TEXT in card
    assert "| `maxfusion_scale` | `2.0` |" in card and "| `sumsides_receptor_weight` | `1.0` |" in card
    assert "**sum_sides** pair architecture" in card and "processor(ligand=[" in card


@pytest.mark.parametrize("scale", [-1, 0, True, "2"])
def test_a_bad_setting_fails_with_the_blocks_own_error(scale, external_blocks, backbones):
    with pytest.raises(ValueError, match=f"maxfusion_scale must be a positive number, got {scale!r}"):
        build(backbones, maxfusion_scale=scale)
    with pytest.raises(ValueError, match="sumsides_receptor_weight must be a number, got 'half'"):
        MetaEmbedConfig(architecture="sum_sides", sumsides_receptor_weight="half")
    with pytest.raises(TypeError, match=r"'maxfusion_scal' \(did you mean 'maxfusion_scale'\?\)"):
        build(backbones, maxfusion_scal=2.0)


def test_registering_a_name_twice_raises(external_blocks):
    max_fusion, sum_sides = external_blocks
    with pytest.raises(ValueError, match="fusion 'max_fusion' is already registered by MaxFusion"):
        FUSIONS.register("max_fusion")(type("OtherMax", (max_fusion,), {}))
    with pytest.raises(ValueError, match="architecture 'sum_sides' is already registered by SumSides"):
        PAIRINGS.register("sum_sides")(type("OtherSum", (sum_sides,), {}))
    with pytest.raises(ValueError, match="declares config field 'maxfusion_scale' with default 3.0"):
        FUSIONS.register("max_fusion_3")(type("Max3", (max_fusion,), {"config_fields": {"maxfusion_scale": 3.0}}))
    assert FUSIONS["max_fusion"] is max_fusion and "max_fusion_3" not in FUSIONS
