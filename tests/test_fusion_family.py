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
