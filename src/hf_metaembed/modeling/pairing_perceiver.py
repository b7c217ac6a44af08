"""The Perceiver pair architecture of the study's reference code (Proteinea/ppiseq `ppiseq/models/perceiver.py`,
`ppiseq/layers/perceiver.py`, settings `perceiver_config` of `training/config/train_config.yaml`): a learned latent
array cross-attends to each side's units, the two sides' latents are added, pooled and passed to the head.

Registered as `architecture="perceiver"`; imported by configuration_metaembed.py and processing_options.py, so every
config, model or processor load registers it. Model code (copied next to a saved model for `trust_remote_code`):
imports torch and its siblings only.
"""

import torch
from torch import nn
from transformers import initialization as init

from .fusion import unit_size
from .pairing import PAIRINGS, Pairing
from .pooling import build_pooler
from .registry import check_choice, check_heads
from .segments import side_tensors

ACTIVATIONS = ("silu", "gelu", "relu")


class LatentFeedForward(nn.Module):
    """`proj_2(act(proj_1 x))`, or gated `proj_2(act(gate x) * proj_1 x)` (the reference's `FeedForward`)."""

    def __init__(self, dim: int, hidden: int, activation: str, gated: bool, bias: bool) -> None:
        super().__init__()
        self.proj_1 = nn.Linear(dim, hidden, bias=bias)
        self.proj_2 = nn.Linear(hidden, dim, bias=bias)
        self.gate_proj = nn.Linear(dim, hidden, bias=bias) if gated else None
        self.activation = getattr(nn.functional, activation)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        if self.gate_proj is not None:
            return self.proj_2(self.activation(self.gate_proj(states)) * self.proj_1(states))
        return self.proj_2(self.activation(self.proj_1(states)))


class LatentAttention(nn.Module):
    """Multi-head attention of `queries (batch, q, dim)` over `keys_values (batch, k, dim)` with padded keys masked.

    As the reference's `MultiHeadAttention`: one query projection, one joint key-value projection, an output
    projection, and scores scaled by `dim ** -0.5` (the whole width, not a head's)."""

    def __init__(self, dim: int, heads: int, bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.kv_proj = nn.Linear(dim, 2 * dim, bias=bias)
        self.o_proj = nn.Linear(dim, dim, bias=bias)
        self.scale = dim**-0.5

    def _split(self, states: torch.Tensor) -> torch.Tensor:
        batch, length, dim = states.shape  # -> (batch, heads, length, dim // heads)
        return states.view(batch, length, self.heads, dim // self.heads).transpose(1, 2)

    def forward(self, queries: torch.Tensor, keys_values: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        query = self._split(self.q_proj(queries))
        key, value = (self._split(part) for part in self.kv_proj(keys_values).chunk(2, dim=-1))
        scores = torch.matmul(query * self.scale, key.transpose(-2, -1))  # (batch, heads, q, k)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask.bool()[:, None, None, :], torch.finfo(scores.dtype).min)
        attended = torch.matmul(torch.softmax(scores, dim=-1), value)
        return self.o_proj(attended.transpose(1, 2).flatten(2))


class LatentBlock(nn.Module):
    """Attention then feed-forward, each after an RMSNorm, with the reference's residual: the residual adds the
    normalised states (`x = norm(x); x = attend(x) + x`), not the block's input."""

    def __init__(self, dim: int, heads: int, hidden: int, activation: str, gated: bool, bias: bool) -> None:
        super().__init__()
        self.attention_norm = nn.RMSNorm(dim)
        self.attention = LatentAttention(dim, heads, bias)
        self.feed_forward_norm = nn.RMSNorm(dim)
        self.feed_forward = LatentFeedForward(dim, hidden, activation, gated, bias)

    def forward(self, latents: torch.Tensor, keys_values: torch.Tensor | None = None, key_mask=None) -> torch.Tensor:
        latents = self.attention_norm(latents)
        source = latents if keys_values is None else keys_values  # self-attention, or cross-attention to units
        latents = self.attention(latents, source, None if keys_values is None else key_mask) + latents
        latents = self.feed_forward_norm(latents)
        return self.feed_forward(latents) + latents


class Perceiver(nn.Module):
    """`latents (num_latents, dim)` (initialised to ones, as the reference) read a side: per layer one cross-attention
    block to the side's units, then `num_self_layers` self-attention blocks over the latents.

    `forward(unit_states (batch, units, dim), unit_mask (batch, units)) -> (batch, num_latents, dim)`."""

    def __init__(self, config, dim: int) -> None:
        super().__init__()
        hidden = config.perceiver_hidden_dim or dim
        args = (dim, config.perceiver_num_heads, hidden, config.perceiver_activation, config.perceiver_gated)
        bias = config.perceiver_bias
        self.latents = nn.Parameter(torch.ones(config.perceiver_num_latents, dim))
        self.layers = nn.ModuleList(
            nn.ModuleDict(
                {
                    "cross": LatentBlock(*args, bias),
                    "self": nn.ModuleList(LatentBlock(*args, bias) for _ in range(config.perceiver_num_self_layers)),
                }
            )
            for _ in range(config.perceiver_num_layers)
        )

    def init_block_weights(self) -> None:
        """The reference's initial latents (ones) and unit RMSNorm scales."""
        init.ones_(self.latents)
        for module in self.modules():
            if isinstance(module, nn.RMSNorm):
                init.ones_(module.weight)

    def forward(self, unit_states: torch.Tensor, unit_mask: torch.Tensor) -> torch.Tensor:
        latents = self.latents.to(unit_states.dtype).expand(unit_states.shape[0], -1, -1)
        for layer in self.layers:
            latents = layer["cross"](latents, unit_states, unit_mask)
            for block in layer["self"]:
                latents = block(latents)
        return latents


@PAIRINGS.register("perceiver")
class PerceiverPairing(Pairing):
    """`perceiver`: each side (chains joined) was read and unit-encoded separately. A Perceiver (a learned latent
    array cross-attending to the side's real units, then self-attending; `perceiver_num_layers` x
    (1 cross + `perceiver_num_self_layers` self blocks), pre-RMSNorm, SiLU feed-forward of `perceiver_hidden_dim`)
    reads each side, one Perceiver shared by both sides unless `perceiver_shared=False`; the two latent arrays are
    added and pooled over the latents (`pooling`), then the head.

    Reference: `PerceiverModel` with `perceiver_config` (64 latents, 8 heads, hidden size = unit size, no bias, one
    perceiver layer with one self layer, not gated, SiLU, shared). Padded units are masked as keys (the reference adds
    `log(mask)`, i.e. minus infinity; here the dtype's minimum, equal after the softmax unless a side is empty).
    """

    layout = "sides"
    config_fields = {
        "perceiver_num_latents": 64,
        "perceiver_num_heads": 8,
        "perceiver_hidden_dim": None,
        "perceiver_bias": False,
        "perceiver_num_layers": 1,
        "perceiver_num_self_layers": 1,
        "perceiver_activation": "silu",
        "perceiver_gated": False,
        "perceiver_shared": True,
    }
    card_text = (
        "Perceiver (perceiver): each side is read separately; a learned latent array cross-attends to each side's "
        "residues, the two sides' latents are added and pooled."
    )

    @classmethod
    def check_config(cls, config, dims: list[int]) -> None:
        super().check_config(config, dims)
        check_heads("perceiver_num_heads", config.perceiver_num_heads, unit_size(config, dims), "unit size")
        check_choice(config.perceiver_activation, ACTIVATIONS, "perceiver_activation")
        for field in ("perceiver_num_latents", "perceiver_num_layers"):
            value = getattr(config, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{field} must be a positive integer, got {value!r}")

    def __init__(self, config, dim: int) -> None:
        super().__init__(config, dim)
        self.perceiver = Perceiver(config, dim)
        if not config.perceiver_shared:
            self.receptor_perceiver = Perceiver(config, dim)
        self.pooler = build_pooler(config.pooling, dim)

    def pool(self, unit_states, unit_mask, samples, group):
        states, mask = side_tensors(unit_states, unit_mask.bool(), group, samples)  # (samples, 2, units, dim)
        receptor_perceiver = getattr(self, "receptor_perceiver", self.perceiver)
        latents = self.perceiver(states[:, 0], mask[:, 0]) + receptor_perceiver(states[:, 1], mask[:, 1])
        every_latent = torch.ones(latents.shape[:2], dtype=torch.bool, device=latents.device)
        pooled, _ = self.pooler(latents, every_latent)  # (samples, dim)
        return pooled


__all__ = ["Perceiver", "PerceiverPairing"]
