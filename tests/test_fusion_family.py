"""The fusion family as issue 19 defines it: task-trained fusions faithful to their references by default (DME's ReLU
after the weighted sum, old configs keeping their settings), every family member registered."""

import torch

from hf_metaembed import MetaEmbedConfig, MetaEmbedModel, list_fusions


def test_every_family_member_is_registered():
    expected = {"concat", "mean", "average", "dme", "cdme", "attention", "svd", "pca", "1ton", "gcca"}
    expected |= {"daeme", "caeme", "aaeme", "lle"}
    assert expected <= set(list_fusions())


def test_dme_applies_the_reference_relu_by_default(tiny_esm, tiny_prott5):
    model = MetaEmbedModel.from_backbones([tiny_esm, tiny_prott5], fusion="dme", fusion_dim=8).eval()
    assert model.config.fusion_activation == "relu"
    fusion = model.fusion
    generator = torch.Generator().manual_seed(0)
    states = [torch.randn(2, 3, 16, generator=generator) for _ in range(2)]
    mask = torch.ones(2, 3, dtype=torch.long)
    with torch.no_grad():
        fused, weights = fusion(states, mask)
        projected = torch.stack([p(h) for p, h in zip(fusion.projections, states)], dim=2)
        alpha = torch.softmax(fusion.scorer(projected).squeeze(-1), dim=-1)
        expected = torch.relu(torch.einsum("bun,bund->bud", alpha, projected))
    torch.testing.assert_close(weights, alpha)
    torch.testing.assert_close(fused, expected)
    assert (fused >= 0).all() and (fused == 0).any()


def test_configs_saved_before_keep_their_activation(tiny_esm):
    stored = MetaEmbedModel.from_backbones([tiny_esm], fusion="dme", fusion_activation=None).config.to_dict()
    assert MetaEmbedConfig.from_dict(stored).fusion_activation is None  # a saved value is kept
    release_0_1 = {key: value for key, value in stored.items() if key not in ("metaembed_config_format",)}
    release_0_1.pop("fusion_activation")
    assert MetaEmbedConfig.from_dict(release_0_1).fusion_activation is None  # 0.1 had no activation
    fresh = {key: value for key, value in stored.items() if key != "fusion_activation"}
    assert MetaEmbedConfig.from_dict(fresh).fusion_activation == "relu"


def _xavier_bound(linear: torch.nn.Linear) -> float:
    fan_out, fan_in = linear.weight.shape
    return (6.0 / (fan_in + fan_out)) ** 0.5


def test_dme_starts_as_the_reference_initialises_it(tiny_esm, tiny_prott5):
    """facebookresearch/DME (`nn_init`): Xavier-uniform projections with U(-1e-4, 1e-4) biases, and a score made of two
    linear layers d -> 2 -> 1 initialised the same way, which ours holds as their product."""
    model = MetaEmbedModel.from_backbones([tiny_esm, tiny_prott5], fusion="dme", fusion_dim=8)
    fusion = model.fusion
    for projection in fusion.projections:  # as built by from_backbones: not transformers' normal(0, 0.02)
        assert projection.weight.abs().max() <= _xavier_bound(projection)
        assert projection.weight.std() > 0.1 and 0 < projection.bias.abs().max() <= 1e-4
    torch.manual_seed(7)
    fusion.init_block_weights()
    # the reference's modules, built, then initialised (`nn_init`) in its order from the same generator
    reference_projections = [torch.nn.Linear(16, 8) for _ in fusion.projections]
    hidden, score = torch.nn.Linear(8, 2), torch.nn.Linear(2, 1)
    torch.manual_seed(7)
    for layer in (*reference_projections, hidden, score):
        torch.nn.init.xavier_uniform_(layer.weight)
        torch.nn.init.uniform_(layer.bias, -1e-4, 1e-4)
    states = [torch.randn(2, 3, 16) for _ in range(2)]
    with torch.no_grad():
        for ours, theirs in zip(fusion.projections, reference_projections):
            torch.testing.assert_close(ours.weight, theirs.weight)
            torch.testing.assert_close(ours.bias, theirs.bias)
        projected = torch.stack([p(h) for p, h in zip(reference_projections, states)], dim=2)
        alpha = torch.softmax(score(hidden(projected)).squeeze(-1), dim=-1)
        _, weights = fusion(states, torch.ones(2, 3, dtype=torch.long))
    torch.testing.assert_close(weights, alpha)


def test_cdme_and_mean_start_as_the_reference_initialises_them(tiny_esm, tiny_prott5):
    cdme = MetaEmbedModel.from_backbones([tiny_esm, tiny_prott5], fusion="cdme", fusion_dim=8).fusion
    lstm, score = cdme.scorer.lstm, cdme.scorer.linear
    for name, parameter in lstm.named_parameters():
        if "weight" in name:  # orthogonal: (4h, d) with 4h <= d has orthonormal rows, (4h, h) orthonormal columns
            gram = parameter @ parameter.T if parameter.shape[0] <= parameter.shape[1] else parameter.T @ parameter
            torch.testing.assert_close(gram, torch.eye(gram.shape[0]), atol=1e-5, rtol=0)
        else:
            assert 0 < parameter.abs().max() <= 1e-4
    assert score.weight.abs().max() <= _xavier_bound(score) and score.bias.abs().max() <= 1e-4
    mean = MetaEmbedModel.from_backbones([tiny_esm, tiny_prott5], fusion="mean", fusion_dim=8).fusion
    for projection in mean.projections:  # DME's projected baseline is the same embedder without the score
        assert projection.weight.std() > 0.1 and 0 < projection.bias.abs().max() <= 1e-4
