"""Training options from the study: ranking losses (against their equations), presets, gradient checkpointing."""

import itertools
import math

import pytest
import torch

from hf_metaembed import MetaEmbedConfig, MetaEmbedForSequenceClassification, MetaEmbedProcessor
from hf_metaembed.modeling.configuration_metaembed import PRESETS
from hf_metaembed.modeling.losses import LOSSES, list_losses


def reference_list_mle(scores: list[float], targets: list[float]) -> float:
    """Plackett-Luce: -log prod_i exp(s_(i)) / sum_{j >= i} exp(s_(j)), samples in descending target order."""
    ordered = [s for _, s in sorted(zip(targets, scores), key=lambda pair: -pair[0])]
    return -sum(ordered[i] - math.log(sum(math.exp(s) for s in ordered[i:])) for i in range(len(ordered)))


def reference_margin_ranking(scores: list[float], targets: list[float], margin: float) -> float:
    """Mean over pairs with different targets of max(0, -sign(t_i - t_j) (s_i - s_j) + margin)."""
    terms = [
        max(0.0, -math.copysign(1.0, targets[i] - targets[j]) * (scores[i] - scores[j]) + margin)
        for i, j in itertools.combinations(range(len(scores)), 2)
        if targets[i] != targets[j]
    ]
    return sum(terms) / len(terms)


def test_the_ranking_losses_are_registered():
    assert list_losses() == ["mse", "list_mle", "margin_ranking"]
    with pytest.raises(ValueError, match="unknown loss 'listmle'.*choose one of: mse, list_mle, margin_ranking"):
        MetaEmbedConfig(loss="listmle")
    with pytest.raises(ValueError, match="ranking_margin must be a number >= 0"):
        MetaEmbedConfig(loss="margin_ranking", ranking_margin=-1)


@pytest.mark.parametrize("seed", range(3))
def test_ranking_losses_match_their_equations(seed):
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(7, generator=generator, dtype=torch.float64)
    targets = torch.randn(7, generator=generator, dtype=torch.float64)
    targets[3] = targets[5]  # a tie: left out of the margin loss
    config = MetaEmbedConfig(loss="margin_ranking", ranking_margin=0.3)
    list_mle = LOSSES["list_mle"].compute(config, scores, targets)
    margin = LOSSES["margin_ranking"].compute(config, scores, targets)
    assert math.isclose(float(list_mle), reference_list_mle(scores.tolist(), targets.tolist()), rel_tol=1e-10)
    assert math.isclose(float(margin), reference_margin_ranking(scores.tolist(), targets.tolist(), 0.3), rel_tol=1e-10)


def test_ranking_losses_depend_only_on_the_order_of_the_targets():
    scores = torch.tensor([0.3, -1.0, 2.0, 0.5])
    config = MetaEmbedConfig()
    for name in ("list_mle", "margin_ranking"):
        loss = LOSSES[name].compute(config, scores, torch.tensor([1.0, 2.0, 3.0, 4.0]))
        monotone = LOSSES[name].compute(config, scores, torch.tensor([10.0, 20.0, 300.0, 4000.0]))
        reversed_order = LOSSES[name].compute(config, scores, torch.tensor([4.0, 3.0, 2.0, 1.0]))
        assert torch.equal(loss, monotone) and not torch.equal(loss, reversed_order)


@pytest.mark.parametrize("loss", ["list_mle", "margin_ranking"])
def test_a_model_trains_with_a_ranking_loss_and_a_batch_of_one_gives_zero(tiny_esm, loss):
    model = MetaEmbedForSequenceClassification.from_backbones([tiny_esm], loss=loss, num_labels=1)
    processor = MetaEmbedProcessor.from_backbones([tiny_esm])
    model.train()
    output = model(
        **processor(["MKTAYIAK", "GSHMLE", "MVLSPA"], return_tensors="pt"), labels=torch.tensor([1.0, 3, 2])
    )
    output.loss.backward()
    assert float(output.loss) > 0 and model.classifier.out_proj.weight.grad.abs().sum() > 0
    single = model(**processor(["MKTAYIAK"], return_tensors="pt"), labels=torch.tensor([1.0]))
    assert float(single.loss) == 0.0 and single.loss.requires_grad


def test_presets_set_the_reference_or_release_0_1_modules_and_explicit_settings_win():
    paper = MetaEmbedConfig(architecture="hp", preset="paper")  # the reference's config at its HEAD
    assert (paper.unit_encoder, paper.pooling, paper.chain_pooling, paper.hp_separate_side_poolers) == (
        "none",
        "attention",
        "attention",
        False,
    )
    assert (paper.hp_ffn, paper.hp_ffn_bias, paper.side_combine, paper.head_dropout) == ("silu", False, "concat", 0.0)
    dated = MetaEmbedConfig(architecture="hp", preset="paper-2025-03-09")  # its config before 2025-03-17
    assert (dated.unit_encoder, dated.pooling, dated.hp_separate_side_poolers) == ("convbert", "mean", True)
    assert (dated.hp_ffn, dated.head_dropout, dated.perceiver_num_latents) == ("silu", 0.0, 512)
    old = MetaEmbedConfig(architecture="pad", preset="v0.1")
    assert (old.pad_ffn, old.pad_num_heads, old.pad_attention_bias, old.pooling) == ("residual", 4, True, "mean")
    mine = MetaEmbedConfig(
        architecture="pad", preset="paper", pad_num_heads=2, pooling="mean", unit_encoder="convbert"
    )
    assert (mine.pad_num_heads, mine.pooling, mine.unit_encoder) == (2, "mean", "convbert")
    assert "preset" not in mine.to_dict()  # the preset chose values; the values are what is saved
    with pytest.raises(ValueError, match="unknown preset 'papr'; choose one of: paper, paper-2025-03-09, v0.1"):
        MetaEmbedConfig(preset="papr")
    for name in ("paper", "paper-2025-03-09"):
        assert set(PRESETS[name]) <= set(MetaEmbedConfig().to_dict())


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_esm):
    torch.manual_seed(0)
    model = MetaEmbedForSequenceClassification.from_backbones([tiny_esm], num_labels=1, freeze_backbones=False)
    processor = MetaEmbedProcessor.from_backbones([tiny_esm])
    batch = processor(["MKTAYIAKQR", "GSHMLEKV"], return_tensors="pt")
    model.train()

    def step():
        model.zero_grad()
        torch.manual_seed(1)  # the same dropout masks in both runs
        output = model(**batch, labels=torch.tensor([1.0, 2.0]))
        output.loss.backward()
        return output.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain_loss, plain_grads = step()
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    assert any(getattr(module, "gradient_checkpointing", False) for module in model.metaembed.backbone_0.modules())
    checkpointed_loss, checkpointed_grads = step()
    assert torch.equal(plain_loss, checkpointed_loss)
    assert plain_grads.keys() == checkpointed_grads.keys() and any(".backbone_0." in k for k in plain_grads)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)
