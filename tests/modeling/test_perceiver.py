"""The Perceiver pair architecture against the study's formulation (Proteinea/ppiseq `PerceiverModel` over
`layers/perceiver.py`), written out here from its equations with our weights, to 1e-6; plus its settings."""

import pytest
import torch

from hf_metaembed import MetaEmbedConfig, MetaEmbedForSequenceClassification, MetaEmbedProcessor
from hf_metaembed.modeling.pairing import PAIRINGS, list_architectures

LIGANDS = [["MKTAYIAK", "GSH"], ["MVLSPADKTNV"]]
RECEPTORS = [["MKV"], ["GSHWLLPQ", "MK"]]


def build(backbone: str, **settings) -> MetaEmbedForSequenceClassification:
    torch.manual_seed(0)
    model = MetaEmbedForSequenceClassification.from_backbones(
        [backbone], fusion="concat", architecture="perceiver", num_labels=1, perceiver_num_heads=2, **settings
    )
    with torch.no_grad():  # every weight off its initial value (the latents start as ones, the norms as ones)
        for name, parameter in model.named_parameters():
            if "backbone_" not in name:
                parameter.add_(0.3 * torch.randn_like(parameter))
    return model.eval()


def rms_norm(norm: torch.nn.RMSNorm, x: torch.Tensor) -> torch.Tensor:
    eps = torch.finfo(x.dtype).eps if norm.eps is None else norm.eps
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * norm.weight


def reference_attention(attention, queries, keys_values, mask):
    """softmax(q k^T * D^-1/2 + log(mask)) v per head, q = W_q x, [k; v] = W_kv y, then W_o (D the whole width)."""
    heads, width = attention.heads, queries.shape[-1]

    def split(x):
        return x.reshape(x.shape[0], x.shape[1], heads, -1).permute(0, 2, 1, 3)

    q = split(attention.q_proj(queries))
    k, v = (split(part) for part in attention.kv_proj(keys_values).chunk(2, dim=-1))
    logits = (q * width**-0.5) @ k.transpose(-2, -1)
    if mask is not None:
        logits = logits + mask.to(logits.dtype).log()[:, None, None, :]
    out = torch.softmax(logits, dim=-1) @ v
    return attention.o_proj(out.permute(0, 2, 1, 3).reshape(queries.shape))


def reference_block(block, latents, keys_values=None, mask=None):
    """x = norm(x); x = attn(x, y) + x; x = norm'(x); x = W_2 silu(W_1 x) + x (the reference's residual order)."""
    latents = rms_norm(block.attention_norm, latents)
    source = latents if keys_values is None else keys_values
    latents = reference_attention(block.attention, latents, source, mask) + latents
    latents = rms_norm(block.feed_forward_norm, latents)
    ffn = block.feed_forward
    return ffn.proj_2(torch.nn.functional.silu(ffn.proj_1(latents))) + latents


def reference_perceiver(perceiver, states, mask):
    latents = perceiver.latents.unsqueeze(0).expand(states.shape[0], -1, -1)
    for layer in perceiver.layers:
        latents = reference_block(layer["cross"], latents, states, mask)
        for block in layer["self"]:
            latents = reference_block(block, latents)
    return latents


def side(states, mask, segment_sample, segment_side, sample, which):
    """One side's real units, read from the processor's segments (one segment per side)."""
    row = int(((segment_sample == sample) & (segment_side == which)).nonzero())
    return states[row][mask[row].bool()].unsqueeze(0)


@pytest.mark.parametrize("shared", [True, False])
def test_perceiver_equals_the_reference_formulation(tiny_esm, shared):
    model = build(tiny_esm, perceiver_shared=shared, perceiver_num_latents=5, perceiver_num_self_layers=2)
    processor = MetaEmbedProcessor.from_backbones([tiny_esm], architecture="perceiver")
    batch = processor(ligand=LIGANDS, receptor=RECEPTORS)
    base = model.metaembed
    with torch.no_grad():
        logits = model(**batch).logits
        reading = base.reader(base.backbones, batch["input_ids"], batch["attention_mask"],
                              batch["token_unit_index"], batch["unit_mask"])  # fmt: skip
        units, mask = reading.states[0], reading.unit_mask
        pairing = base.pairing
        receptor_perceiver = pairing.perceiver if shared else pairing.receptor_perceiver
        for sample in range(len(LIGANDS)):
            sides = [side(units, mask, batch["segment_sample_index"], batch["segment_side_index"], sample, s)
                     for s in (0, 1)]  # fmt: skip
            # unpadded sides: the reference's mask is all ones there; padded in a batch, the key mask matters
            latents = reference_perceiver(pairing.perceiver, sides[0], None)
            latents = latents + reference_perceiver(receptor_perceiver, sides[1], None)
            scores = pairing.pooler.score(latents).squeeze(-1)  # the reference's attention pooler, no mask
            pooled = (torch.softmax(scores, dim=1).unsqueeze(-1) * latents).sum(1)
            expected = model.classifier(pooled)
            torch.testing.assert_close(logits[sample], expected[0], rtol=0, atol=1e-6)


def test_perceiver_is_registered_with_the_reference_settings():
    assert "perceiver" in list_architectures()
    config = MetaEmbedConfig(architecture="perceiver")
    assert config.pooling == "attention" and config.perceiver_num_latents == 64 and config.perceiver_shared
    assert PAIRINGS.get_class("perceiver").layout == "sides"
    with pytest.raises(ValueError, match="perceiver_activation"):
        MetaEmbedConfig(architecture="perceiver", perceiver_activation="tanh")


def test_perceiver_saves_and_reloads(tiny_esm, tmp_path):
    model = build(tiny_esm, perceiver_gated=True)
    processor = MetaEmbedProcessor.from_backbones([tiny_esm], architecture="perceiver")
    batch = processor(ligand=LIGANDS, receptor=RECEPTORS)
    model.save_pretrained(tmp_path / "m")
    reloaded = MetaEmbedForSequenceClassification.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits, rtol=0, atol=1e-6)
