"""Unit encoders, ConvBERT in particular: sizes, masking of padding, length grouping and clear errors."""

from types import SimpleNamespace

import pytest
import tiny_backbones
import torch

from hf_metaembed import (
    MetaEmbedConfig,
    MetaEmbedForSequenceClassification,
    MetaEmbedProcessor,
    list_heads,
    list_unit_encoders,
)
from hf_metaembed.modeling.unit_encoders import (
    UNIT_ENCODERS,
    ConvBertUnitEncoder,
    NoUnitEncoder,
    build_unit_encoder,
    length_groups,
)

CONVBERT = ConvBertUnitEncoder.config_fields


def encoder(dim: int = 16, **settings) -> ConvBertUnitEncoder:
    torch.manual_seed(0)
    module = ConvBertUnitEncoder(SimpleNamespace(**{**CONVBERT, **settings}), dim)
    with torch.no_grad():  # random biases too, so a bias that fills padding would show
        for parameter in module.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return module.eval()


def test_convbert_is_registered_with_the_documented_defaults():
    assert list_unit_encoders() == ["none", "convbert"] and UNIT_ENCODERS["convbert"] is ConvBertUnitEncoder
    config = MetaEmbedConfig(unit_encoder="convbert")
    assert (config.convbert_num_heads, config.convbert_kernel_size) == (8, 7)
    assert (config.convbert_dropout, config.convbert_attention_dropout) == (0.2, 0.1)
    unit_encoder = build_unit_encoder(config, 32)
    assert isinstance(unit_encoder, ConvBertUnitEncoder)
    assert unit_encoder.mixed_heads == 4 and unit_encoder.head_size == 4  # 4 attention + 4 convolution heads
    assert unit_encoder.intermediate.out_features == 16  # d / 2
    assert unit_encoder.key_depthwise.kernel_size == (7,) and unit_encoder.conv_kernel.out_features == 4 * 7
    assert unit_encoder.dropout.p == 0.2 and unit_encoder.attention_dropout.p == 0.1


def test_release_0_1_head_name_convbert_means_a_linear_head_over_convbert_units():
    assert "convbert" not in list_heads()
    config = MetaEmbedConfig(head="convbert", convbert_num_heads=4)
    assert (config.head, config.unit_encoder, config.convbert_num_heads) == ("linear", "convbert", 4)
    assert MetaEmbedConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()


@pytest.mark.parametrize("head", list_heads())
def test_without_a_unit_encoder_fused_states_pass_unchanged(head):
    config = MetaEmbedConfig(head=head)
    assert config.unit_encoder == "none"
    unit_encoder = build_unit_encoder(config, 16)
    assert isinstance(unit_encoder, NoUnitEncoder) and not list(unit_encoder.parameters())
    states, mask = torch.randn(2, 5, 16), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert unit_encoder(states, mask) is states


@pytest.mark.parametrize("extra", [1, 9])
def test_convbert_padding_never_leaks_into_residues(extra):
    module = encoder()
    lengths = torch.tensor([5, 1, 12])
    mask = (torch.arange(12) < lengths[:, None]).long()
    states = torch.randn(3, 12, 16) * mask.unsqueeze(-1)
    with torch.no_grad():
        clean = module(states, mask)
        # more padding, filled with large garbage: the real units must not notice
        padded_mask = torch.nn.functional.pad(mask, (0, extra))
        padded = torch.nn.functional.pad(states, (0, 0, 0, extra))
        padded = padded + 50 * torch.randn_like(padded) * (1 - padded_mask).unsqueeze(-1)
        noisy = module(padded, padded_mask)
    torch.testing.assert_close(noisy[:, :12], clean, atol=1e-5, rtol=0)
    assert noisy[padded_mask == 0].abs().max() == 0  # padded units come out as zeros
    # each sample alone, unpadded, gives the same states
    for row, length in enumerate(lengths.tolist()):
        with torch.no_grad():
            alone = module(states[row : row + 1, :length], mask[row : row + 1, :length])
        torch.testing.assert_close(alone[0], clean[row, :length], atol=1e-5, rtol=0)


def test_convbert_mixes_neighbouring_units():
    module = encoder()
    mask = torch.ones(1, 10, dtype=torch.long)
    states = torch.randn(1, 10, 16)
    changed = states.clone()
    changed[0, 4] += 1.0
    with torch.no_grad():
        difference = (module(changed, mask) - module(states, mask)).abs().sum(dim=-1)[0]
    assert (difference > 1e-4).all()  # attention reaches every unit, the convolution its neighbours


def test_convbert_trains():
    module = encoder().train()
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    module(torch.randn(2, 4, 16), mask).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())


@pytest.mark.parametrize(
    ("dim", "heads", "kernel", "message"),
    [
        (20, 8, 7, "convbert_num_heads=8 must be even .* divide the unit size 20; choose one of: 2, 4, 10, 20"),
        (16, 3, 7, "convbert_num_heads=3 must be even .* divide the unit size 16; choose one of: 2, 4, 8, 16"),
        (16, 8, 4, "convbert_kernel_size must be a positive odd number .* got 4"),
    ],
)
def test_convbert_settings_that_cannot_work_raise(dim, heads, kernel, message):
    settings = {**CONVBERT, "convbert_num_heads": heads, "convbert_kernel_size": kernel}
    # the block's own check, on the unit size the fusion gives (here: one backbone of width `dim`, concatenated)
    with pytest.raises(ValueError, match=message):
        ConvBertUnitEncoder.check_config(SimpleNamespace(**settings, fusion="concat", fusion_dim=None), [dim])
    # and through the config, before any layer is built: a 16-wide backbone projected to `dim` by dme
    esm = tiny_backbones.build_tiny_esm()[0].config.to_dict()
    with pytest.raises(ValueError, match=message):
        MetaEmbedConfig(backbone_configs=[esm], fusion="dme", fusion_dim=dim, unit_encoder="convbert", **settings)


def test_convbert_model_is_padding_invariant_with_two_backbones(tiny_prott5, tiny_ankh):
    backbones = [tiny_prott5, tiny_ankh]
    torch.manual_seed(0)
    model = MetaEmbedForSequenceClassification.from_backbones(
        backbones, unit_encoder="convbert", fusion="concat", num_labels=2
    )
    model.eval()
    assert model.metaembed.unit_encoder.head_size == 4  # concat of two 16-wide backbones: 32 = 8 heads x 4
    processor = MetaEmbedProcessor.from_backbones(backbones)
    sequences = ["MKTAYIAKQRGSHW", "WLE", "ACDEFGHIK"]
    with torch.no_grad():
        together = model(**processor(sequences)).logits
        for row, sequence in enumerate(sequences):
            torch.testing.assert_close(model(**processor([sequence])).logits[0], together[row], atol=1e-5, rtol=0)


def test_length_groups_bound_padding_and_cover_every_segment():
    lengths = [50, 300, 0, 120, 280, 75, 1, 299, 226, 60, 10]
    groups = length_groups(lengths, 0.75, min_length=64)
    assert sorted(i for group in groups for i in group) == list(range(len(lengths)))
    for group in groups:
        longest = lengths[group[0]]
        assert longest == max(lengths[i] for i in group)
        if longest > 64:
            assert all(lengths[i] >= 0.75 * longest for i in group)
    assert [lengths[g[0]] for g in groups] == sorted({lengths[g[0]] for g in groups}, reverse=True)
    assert sorted(lengths[i] for i in groups[-1]) == [0, 1, 10, 50]  # short ones share one group
    assert length_groups([9, 30, 5], 0.75, min_length=64) == [[1, 0, 2]]


def test_convbert_groups_by_length_with_the_same_outputs_and_gradients():
    """Grouped segments (each group cut to its own length) give what one padded pass gives, gradients included."""
    module = encoder()
    lengths = [5, 200, 0, 70, 190, 9, 1, 199]
    states = torch.randn(len(lengths), 200, 16)
    mask = torch.zeros(len(lengths), 200, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    assert len(length_groups(lengths, module.group_length_ratio, module.group_min_length)) > 1
    grouped_input, single_input = states.clone().requires_grad_(), states.clone().requires_grad_()
    grouped, single = module(grouped_input, mask), module.encode(single_input, mask)
    torch.testing.assert_close(grouped, single, atol=1e-5, rtol=0)
    assert torch.all(grouped[mask == 0] == 0)
    weights = torch.randn_like(grouped)
    (grouped * weights).sum().backward()
    (single * weights).sum().backward()
    torch.testing.assert_close(grouped_input.grad, single_input.grad, atol=1e-5, rtol=0)
    assert grouped_input.grad[mask.bool()].abs().sum() > 0


def test_convbert_single_group_is_cut_to_its_longest_segment():
    module = encoder()
    states = torch.randn(2, 12, 16)
    mask = torch.tensor([[1] * 7 + [0] * 5, [1] * 8 + [0] * 4])  # one group; the first segment is not the longest
    assert len(length_groups([7, 8], module.group_length_ratio, module.group_min_length)) == 1
    torch.testing.assert_close(module(states, mask), module.encode(states, mask), atol=1e-5, rtol=0)
