"""Task heads: every registered head maps pooled or per-unit states to logits; release 0.1's `head="convbert"`."""

import pytest
import torch

from hf_metaembed import MetaEmbedConfig, list_heads
from hf_metaembed.modeling.heads import HEADS, LinearHead, MLPHead, build_head


@pytest.mark.parametrize("head", list_heads())
@pytest.mark.parametrize("shape", [(3, 24), (2, 5, 24)])
def test_every_head_maps_states_to_logits(head, shape):
    torch.manual_seed(0)
    config = MetaEmbedConfig(head=head)
    module = build_head(config, 24, 3)
    assert isinstance(module, HEADS[head]) and module.out_proj.out_features == 3
    states = torch.randn(*shape)
    logits = module.eval()(states)
    assert logits.shape == (*shape[:-1], 3) and torch.isfinite(logits).all()
    # rows never mix: each row alone gives the same logits
    torch.testing.assert_close(module(states[:1]), logits[:1], atol=1e-6, rtol=0)
    module.train()(states).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_head_settings_reach_the_layers():
    head = build_head(MetaEmbedConfig(head="mlp", head_hidden_size=7, head_dropout=0.3), 24, 2)
    assert isinstance(head, MLPHead)
    assert (head.dense.in_features, head.dense.out_features, head.out_proj.in_features) == (24, 7, 7)
    assert head.dropout.p == 0.3
    default = build_head(MetaEmbedConfig(head="mlp"), 24, 2)
    assert default.dense.out_features == 24 and default.dropout.p == 0.1  # hidden size defaults to the input size


def test_release_0_1_convbert_head_is_a_linear_head():
    config = MetaEmbedConfig(head="convbert")
    assert (config.head, config.unit_encoder) == ("linear", "convbert")
    head = build_head(config, 32, 3)
    assert type(head) is LinearHead
    assert isinstance(head.out_proj, torch.nn.Linear) and head.out_proj.out_features == 3


def test_unknown_head_lists_the_choices():
    with pytest.raises(ValueError, match=r"unknown head 'conv' \(config field `head`\); choose one of: linear, mlp"):
        MetaEmbedConfig(head="conv")
