"""The study's modules, written out here from their published description (Proteinea/ppiseq `ppiseq/models/convbert/`
with `training/config/train_config.yaml`), against ours with the same weights.

Each reference below is the module's equation, not its code: ConvBERT is transformers' own `ConvBertModel` encoder
(what the reference wraps), the rest is a few lines of tensor algebra. Inputs have no padding inside a segment, where
the reference and we agree by construction (we mask padding before the ConvBERT convolution; the reference lets it
leak: docs/PAPER.md lists that and every other deliberate difference).
"""

import math

import pytest
import torch
from torch import nn
from transformers import ConvBertConfig, ConvBertModel

from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedProcessor

DIM = 16  # the tiny ESM backbone's hidden size; with fusion="concat" over one backbone the unit states are its own
UNITS = 6


def build(backbone: str, architecture: str, pooling: str, **settings) -> MetaEmbedForSequenceClassification:
    torch.manual_seed(0)
    model = MetaEmbedForSequenceClassification.from_backbones(
        [backbone],
        fusion="concat",
        architecture=architecture,
        preset="paper-2025-03-09",  # the reference config with ConvBERT and poolers per side
        pooling=pooling,
        num_labels=1,
        **settings,
    )
    with torch.no_grad():  # move every trained weight off its initial value, so no term is trivially zero
        for name, parameter in model.named_parameters():
            if "backbone_" not in name:
                parameter.add_(0.3 * torch.randn_like(parameter))
    return model.eval()


def reference_convbert(encoder: nn.Module, states: torch.Tensor) -> torch.Tensor:
    """transformers' ConvBERT layer as the reference configures it (8 heads, head_ratio 2, one group, kernel 7,
    intermediate size d/2, GELU), with our ConvBERT's weights."""
    config = ConvBertConfig(
        hidden_size=DIM,
        num_hidden_layers=1,
        num_attention_heads=encoder.mixed_heads * 2,
        intermediate_size=DIM // 2,
        head_ratio=2,
        conv_kernel_size=encoder.kernel_size,
        num_groups=1,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
    )
    reference = ConvBertModel(config).encoder.eval()
    layer = reference.layer[0]
    attention = layer.attention.self
    with torch.no_grad():
        for ours, theirs in (
            (encoder.query, attention.query),
            (encoder.key, attention.key),
            (encoder.value, attention.value),
            (encoder.conv_kernel, attention.conv_kernel_layer),
            (encoder.conv_value, attention.conv_out_layer),
            (encoder.attention_output, layer.attention.output.dense),
            (encoder.attention_norm, layer.attention.output.LayerNorm),
            (encoder.intermediate, layer.intermediate.dense),
            (encoder.output, layer.output.dense),
            (encoder.output_norm, layer.output.LayerNorm),
        ):
            theirs.weight.copy_(ours.weight)
            theirs.bias.copy_(ours.bias)
        attention.key_conv_attn_layer.depthwise.weight.copy_(encoder.key_depthwise.weight)
        attention.key_conv_attn_layer.pointwise.weight.copy_(encoder.key_pointwise.weight)
        attention.key_conv_attn_layer.bias.copy_(encoder.key_pointwise.bias.view(-1, 1))
        return reference(states)[0]


def reference_pool(pooler: nn.Module, states: torch.Tensor) -> torch.Tensor:
    """`avg`: the mean over positions; `attention`: softmax over positions of a learned score w . x (+ b)."""
    if not hasattr(pooler, "score"):
        return states.mean(dim=-2)
    weights = torch.softmax(pooler.score(states).squeeze(-1), dim=-1)
    return (weights.unsqueeze(-1) * states).sum(dim=-2)


def reference_cross_attention(attention: nn.MultiheadAttention, queries, keys) -> torch.Tensor:
    """Bias-free multi-head attention: softmax(q k^T / sqrt(d_head)) v per head, heads concatenated, output map."""
    heads = attention.num_heads
    head_size = DIM // heads
    w_q, w_k, w_v = attention.in_proj_weight.chunk(3)

    def split(x):  # (batch, length, dim) -> (batch, heads, length, head_size)
        return x.view(x.shape[0], x.shape[1], heads, head_size).transpose(1, 2)

    q, k, v = split(queries @ w_q.T), split(keys @ w_k.T), split(keys @ w_v.T)
    mixed = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head_size), dim=-1) @ v
    return mixed.transpose(1, 2).reshape(queries.shape) @ attention.out_proj.weight.T


def output_layer(model, vector: torch.Tensor) -> torch.Tensor:
    return model.classifier.out_proj(vector)


def run(model, states: torch.Tensor, sample: list[int], side: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(
            backbone_states=[states],
            unit_mask=torch.ones(states.shape[:2], dtype=torch.long),
            segment_sample_index=torch.tensor(sample),
            segment_side_index=torch.tensor(side),
        ).logits


POOLINGS = ["mean", "attention"]


@pytest.mark.parametrize("pooling", POOLINGS)
def test_sc_is_convbert_over_the_joined_complex_then_pool_then_output(tiny_esm, pooling):
    model = build(tiny_esm, "sc", pooling)
    complexes = torch.randn(2, UNITS, DIM)
    with torch.no_grad():
        pooled = reference_pool(
            model.metaembed.pairing.pooler, reference_convbert(model.metaembed.unit_encoder, complexes)
        )
        expected = output_layer(model, pooled)
    torch.testing.assert_close(run(model, complexes, [0, 1], [0, 0]), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_ec_joins_the_sides_before_convbert_then_linear_silu_linear(tiny_esm, pooling):
    model = build(tiny_esm, "ec", pooling)
    ligands, receptors = torch.randn(2, UNITS, DIM), torch.randn(2, UNITS, DIM)
    pairing = model.metaembed.pairing
    with torch.no_grad():
        joined = reference_convbert(model.metaembed.unit_encoder, torch.cat([ligands, receptors], dim=1))
        hidden = nn.functional.silu(pairing.feed_forward[0](reference_pool(pairing.pooler, joined)))
        expected = output_layer(model, hidden)
    segments = torch.stack([ligands[0], receptors[0], ligands[1], receptors[1]])
    torch.testing.assert_close(run(model, segments, [0, 0, 1, 1], [0, 1, 0, 1]), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_hp_pools_chains_then_sides_then_concat_then_bias_free_ffn(tiny_esm, pooling):
    model = build(tiny_esm, "hp", pooling)
    pairing = model.metaembed.pairing
    assert pairing.feed_forward[0].bias is None and pairing.feed_forward[2].bias is None  # `bias: false`
    # sample 0: two ligand chains, one receptor chain; sample 1: one ligand chain, two receptor chains
    sample, side = [0, 0, 0, 1, 1, 1], [0, 0, 1, 0, 1, 1]
    chains = torch.randn(len(sample), UNITS, DIM)
    with torch.no_grad():
        encoded = reference_convbert(model.metaembed.unit_encoder, chains)  # every chain alone
        expected = []
        for index in range(2):
            side_vectors = []
            for which, (residue_pooler, chain_pooler) in enumerate(
                [(pairing.pooler, pairing.chain_pooler), (pairing.receptor_pooler, pairing.receptor_chain_pooler)]
            ):
                rows = [i for i in range(len(sample)) if sample[i] == index and side[i] == which]
                chain_vectors = torch.stack([reference_pool(residue_pooler, encoded[i]) for i in rows])
                side_vectors.append(reference_pool(chain_pooler, chain_vectors))
            combined = torch.cat(side_vectors)
            ffn = pairing.feed_forward
            expected.append(output_layer(model, ffn[2](nn.functional.silu(ffn[0](combined)))))
        expected = torch.stack(expected)
    torch.testing.assert_close(run(model, chains, sample, side), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_pad_cross_attends_with_residual_pools_adds_then_silu_ffn(tiny_esm, pooling, shared):
    model = build(tiny_esm, "pad", pooling, pad_shared_attention=shared)
    pairing = model.metaembed.pairing
    assert pairing.ligand_attention.num_heads == 8 and pairing.ligand_attention.in_proj_bias is None
    ligands, receptors = torch.randn(2, UNITS, DIM), torch.randn(2, UNITS, DIM)
    receptor_attention = pairing.ligand_attention if shared else pairing.receptor_attention
    with torch.no_grad():
        ligand = reference_convbert(model.metaembed.unit_encoder, ligands)
        receptor = reference_convbert(model.metaembed.unit_encoder, receptors)
        ligand_out = ligand + reference_cross_attention(pairing.ligand_attention, ligand, receptor)
        receptor_out = receptor + reference_cross_attention(receptor_attention, receptor, ligand)
        added = reference_pool(pairing.pooler, ligand_out) + reference_pool(pairing.pooler, receptor_out)
        ffn = pairing.feed_forward
        expected = output_layer(model, ffn[2](nn.functional.silu(ffn[0](added))))
    segments = torch.stack([ligands[0], receptors[0], ligands[1], receptors[1]])
    torch.testing.assert_close(run(model, segments, [0, 0, 1, 1], [0, 1, 0, 1]), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("architecture", ["sc", "ec", "hp", "pad"])
def test_ligand_and_receptor_interact_at_random_initialisation(tiny_esm, tiny_prott5, architecture):
    """y(L1,R1) + y(L2,R2) - y(L1,R2) - y(L2,R1) is zero exactly when the output is a function of the ligand plus a
    function of the receptor. In float64, so the check cannot be float noise."""
    torch.manual_seed(0)
    backbones = [tiny_esm, tiny_prott5]
    model = MetaEmbedForSequenceClassification.from_backbones(
        backbones, architecture=architecture, unit_encoder="convbert", num_labels=1
    )
    model = model.double().eval()
    processor = MetaEmbedProcessor.from_backbones(backbones, architecture=architecture)
    ligands = [["MKTAYIAKQRQISFVKSHFSRQ", "GSHMLE"], ["MVLSPADKTNVKAAWGKVGA"]]
    receptors = [["MKVLAAGIVGLPNVGKSTLF"], ["GGSAAKWEEL", "MKTWAKLHE"]]

    def y(ligand, receptor) -> float:
        with torch.no_grad():
            return model(**processor(ligand=[ligand], receptor=[receptor], return_tensors="pt")).logits.item()

    interaction = y(ligands[0], receptors[0]) + y(ligands[1], receptors[1])
    interaction -= y(ligands[0], receptors[1]) + y(ligands[1], receptors[0])
    assert abs(interaction) > 1e-9, f"{architecture}: ligand and receptor only meet additively ({interaction:.3e})"


def test_release_0_1_hp_is_additive_which_the_feed_forward_block_fixes(tiny_esm):
    """Without the feed-forward block (release 0.1's `hp`), the pooled sides only ever meet in a linear layer."""
    torch.manual_seed(0)
    states = torch.randn(4, UNITS, DIM, dtype=torch.float64)
    values = {}
    for ffn in ("none", "silu"):
        model = build(tiny_esm, "hp", "attention", hp_ffn=ffn).double()
        pick = {(0, 0): [0, 2], (1, 1): [1, 3], (0, 1): [0, 3], (1, 0): [1, 2]}
        values[ffn] = {key: float(run(model, states[rows], [0, 0], [0, 1])) for key, rows in pick.items()}
    for ffn, y in values.items():
        interaction = y[0, 0] + y[1, 1] - y[0, 1] - y[1, 0]
        assert (abs(interaction) < 1e-12) == (ffn == "none"), (ffn, interaction)
