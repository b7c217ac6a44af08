"""Masked pooling of a sequence of states into one vector: `mean`, `max`, `attention`, `cls`, `last_token`,
`weighted_mean`, `mean_sqrt_len` (these four are also sentence-transformers' pooling modes: `SentencePooler`),
`gated_mean`, `latent_attention` (NV-Embed) and the composite `mean_max` (`CompositePooler`: poolings concatenated).
The reader pools each backbone's tokens at `level="sequence"` with one of them (`check_token_pooling` checks a
per-backbone choice).

Every pooler maps `states (batch, length, dim)` and `mask (batch, length)` (True/1 where a state is real) to
`(batch, dim)`. Masked positions never contribute; a row with no real position pools to zeros.
"""

import torch
from torch import nn
from transformers import initialization as init

from .registry import Block, new_registry

POOLERS = new_registry("pooling", "pooling")


def list_poolings() -> list[str]:
    """Names accepted by `MetaEmbedConfig(pooling=...)` and `chain_pooling=...`."""
    return POOLERS.names()


class Pooler(Block, nn.Module):
    """Base class: `forward(states, mask) -> (pooled, weights)` with weights `(batch, length)` or None."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    @classmethod
    def output_size(cls, dim: int) -> int:
        """Width of the pooled vector for states of width `dim` (a composite's is wider)."""
        return dim


@POOLERS.register("mean")
class MeanPooler(Pooler):
    """Average of the real positions."""

    card_text = "mean over the real positions"

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = mask.to(states.dtype)
        weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1.0)
        return torch.einsum("bl,bld->bd", weights, states), weights


@POOLERS.register("max")
class MaxPooler(Pooler):
    """Element-wise maximum over the real positions."""

    card_text = "element-wise maximum over the real positions"

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, None]:
        real = mask.bool()
        filled = states.masked_fill(~real.unsqueeze(-1), torch.finfo(states.dtype).min)
        pooled = filled.max(dim=1).values
        # a row with no real position would otherwise pool to the dtype minimum
        return pooled.masked_fill(~real.any(dim=1, keepdim=True), 0.0), None


@POOLERS.register("attention")
class AttentionPooler(Pooler):
    """Softmax-weighted average with a learned score per position (masked before the softmax).

    The study's `AttentionPooling1D` (Proteinea/ppiseq `layers/poolers.py`) scores with a bias-free linear layer; the
    bias here adds the same constant to every score, which the softmax cancels, so the two compute the same function.
    """

    card_text = "softmax-weighted average with a learned score per position"

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.score = nn.Linear(dim, 1)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        real = mask.bool()
        scores = self.score(states).squeeze(-1).masked_fill(~real, torch.finfo(states.dtype).min)
        weights = torch.softmax(scores, dim=1) * real.to(states.dtype)
        return torch.einsum("bl,bld->bd", weights, states), weights


def _real_positions(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, `rank (batch, length)` 1..n at the real positions (0 elsewhere) and `count (batch,)` n."""
    real = mask.bool()
    rank = real.long().cumsum(dim=1) * real
    return rank, real.sum(dim=1)


def _pick(states: torch.Tensor, mask: torch.Tensor, position: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The state at `position (batch,)` of each row, zeros for a row with no real position; one-hot weights."""
    weights = nn.functional.one_hot(position.clamp(min=0), states.shape[1]).to(states.dtype)
    weights = weights * mask.bool().any(dim=1, keepdim=True).to(states.dtype)
    return torch.einsum("bl,bld->bd", weights, states), weights


@POOLERS.register("cls")
class FirstPooler(Pooler):
    """The first real position's state (a [CLS] token where special tokens are pooled; else the first unit), correct
    under left and right padding."""

    card_text = "the state of the first real position ([CLS] where special tokens are kept)"

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rank, _ = _real_positions(mask)
        return _pick(states, mask, (rank == 1).long().argmax(dim=1))


@POOLERS.register("last_token")
class LastTokenPooler(Pooler):
    """The last real position's state (decoder embedders' recipe), correct under left and right padding."""

    card_text = "the state of the last real position (as decoder embedding models pool)"

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rank, count = _real_positions(mask)
        return _pick(states, mask, (rank == count.unsqueeze(1)).long().argmax(dim=1))


@POOLERS.register("weighted_mean")
class WeightedMeanPooler(Pooler):
    """Position-weighted mean (SGPT, Muennighoff 2022): the k-th real position weighs k / sum(1..n)."""

    card_text = "mean weighted by position (the k-th real position weighs k; SGPT)"

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rank, _ = _real_positions(mask)
        weights = rank.to(states.dtype)
        weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1.0)
        return torch.einsum("bl,bld->bd", weights, states), weights


@POOLERS.register("mean_sqrt_len")
class MeanSqrtLengthPooler(Pooler):
    """Sum of the real positions divided by the square root of their count (sentence-transformers'
    `mean_sqrt_len_tokens`)."""

    card_text = "sum over the real positions divided by the square root of their count"

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = mask.to(states.dtype)
        weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1.0).sqrt()
        return torch.einsum("bl,bld->bd", weights, states), weights


@POOLERS.register("gated_mean")
class GatedMeanPooler(Pooler):
    """Mean of gated states: g_t = sigmoid(w . h_t + b), pooled = sum_t m_t g_t h_t / sum_t m_t (m the mask). Unlike
    `attention`, the gates are independent per position (no softmax), so a sequence can keep or drop each state on
    its own. Weights reported: m_t g_t / sum_t m_t."""

    card_text = "mean of the states, each scaled by a learned sigmoid gate"

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.gate = nn.Linear(dim, 1)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        real = mask.to(states.dtype)
        weights = torch.sigmoid(self.gate(states).squeeze(-1)) * real / real.sum(dim=1, keepdim=True).clamp(min=1.0)
        return torch.einsum("bl,bld->bd", weights, states), weights


@POOLERS.register("latent_attention")
class LatentAttentionPooler(Pooler):
    """NV-Embed's latent attention layer (Lee et al., "NV-Embed", 2024): the states are queries cross-attending to a
    trainable latent array L (`latents` x dim, keys and values), o_t = MultiHead(q = h_t, k = v = L), then an MLP
    (Linear-GELU-Linear) with a residual, y_t = o_t + MLP(o_t), then the mean over the real positions. 32 latents
    (NV-Embed uses 512) and 8 heads when they divide the size (else 1)."""

    card_text = "mean over the positions after they cross-attend to a learned latent array (NV-Embed)"
    latents = 32

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.latent_array = nn.Parameter(torch.zeros(self.latents, dim))
        self.attention = nn.MultiheadAttention(dim, 8 if dim % 8 == 0 else 1, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def init_block_weights(self) -> None:
        init.normal_(self.latent_array, std=0.02)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latent = self.latent_array.to(states.dtype).unsqueeze(0).expand(states.shape[0], -1, -1)
        attended, _ = self.attention(states, latent, latent, need_weights=False)  # (batch, length, dim)
        attended = attended + self.mlp(attended)
        weights = mask.to(states.dtype)
        weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1.0)
        return torch.einsum("bl,bld->bd", weights, attended), weights


class CompositePooler(Pooler):
    """Several registered poolings side by side: [pool_1(states); pool_2(states); ...], width len(parts) x dim (as
    protein-embedding tools often concatenate mean and max). A composite is one subclass naming its `parts`; the one
    registered here is `mean_max`. Its wider vector feeds the head of architecture `single` at `level="unit"` (the
    pair architectures and sequence-level reading pool into vectors of the unit size)."""

    card_text = "several poolings concatenated"
    parts: tuple[str, ...] = ()

    @classmethod
    def output_size(cls, dim: int) -> int:
        return dim * len(cls.parts)

    @classmethod
    def check_config(cls, config, dims: list[int]) -> None:
        if config.architecture != "single" or config.level != "unit":
            raise ValueError(
                f"pooling {cls.registered_name!r} concatenates {', '.join(cls.parts)} into a wider vector, which only "
                f"architecture='single' at level='unit' reads (got architecture={config.architecture!r}, "
                f"level={config.level!r}); choose a single pooling such as 'mean' there"
            )

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.poolers = nn.ModuleList(build_pooler(name, dim) for name in self.parts)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, None]:
        return torch.cat([pooler(states, mask)[0] for pooler in self.poolers], dim=-1), None


@POOLERS.register("mean_max")
class MeanMaxPooler(CompositePooler):
    """[mean; max] over the real positions."""

    card_text = "mean and element-wise maximum over the real positions, concatenated"
    parts = ("mean", "max")


def build_pooler(name: str, dim: int) -> Pooler:
    """Instantiate the pooler registered as `name` for states of size `dim`."""
    return POOLERS.get_class(name)(dim)


# sentence-transformers' `Pooling` modes and the pooler of this library's registry that computes each
SENTENCE_POOLERS = {
    "mean": "mean",
    "max": "max",
    "cls": "cls",
    "lasttoken": "last_token",
    "mean_sqrt_len_tokens": "mean_sqrt_len",
    "weightedmean": "weighted_mean",
}
SENTENCE_POOLING_MODES = tuple(SENTENCE_POOLERS)


class SentencePooler(nn.Module):
    """A sentence-transformers backbone's own sentence vector: its pooling mode over every token its attention mask
    keeps ([CLS]/[SEP] included), then L2 normalisation if the model normalises.

    Args:
        pooling: `{"mode": one of SENTENCE_POOLING_MODES, "normalize": bool}` (a backbone record's
            `sentence_pooling`); the mode names a pooler of the registry (`SENTENCE_POOLERS`).
        dim: the backbone's hidden size.
    """

    def __init__(self, pooling: dict, dim: int) -> None:
        super().__init__()
        mode = pooling["mode"]
        if mode not in SENTENCE_POOLERS:
            raise ValueError(
                f"unknown sentence pooling mode {mode!r}; choose one of: {', '.join(SENTENCE_POOLING_MODES)}"
            )
        self.pooler = build_pooler(SENTENCE_POOLERS[mode], dim)
        self.normalize = bool(pooling.get("normalize"))

    def forward(self, token_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """`token_states (segments, tokens, dim)`, `attention_mask (segments, tokens)` -> `(segments, dim)`."""
        pooled, _ = self.pooler(token_states, attention_mask)
        return nn.functional.normalize(pooled, p=2, dim=-1) if self.normalize else pooled


def pool_sentence(token_states: torch.Tensor, attention_mask: torch.Tensor, pooling: dict) -> torch.Tensor:
    """One vector per segment as a sentence-transformers model makes it (`SentencePooler`): `(segments, dim)`."""
    return SentencePooler(pooling, token_states.shape[-1]).to(token_states.device)(token_states, attention_mask)


def check_token_pooling(pooling, index: int, level: str) -> None:
    """Raise a `ValueError` naming backbone `index` unless `pooling` can pool its tokens (`backbone_poolings`): a
    registered pooling of one vector the backbone's width, at `level="sequence"` (at unit level the fused units are
    pooled, by `pooling`)."""
    POOLERS.check(pooling, f"backbone_poolings[{index}]")
    if level != "sequence":
        raise ValueError(
            f"backbone_poolings[{index}]={pooling!r} chooses how backbone {index} pools its tokens at "
            f"level='sequence', but level={level!r} pools the fused units with `pooling`; use level='sequence', or "
            "leave backbone_poolings unset"
        )
    if POOLERS.get_class(pooling).output_size(8) != 8:
        raise ValueError(
            f"backbone_poolings[{index}]={pooling!r} makes a wider vector than the backbone's states; choose a single "
            "pooling such as 'mean', 'cls' or 'attention'"
        )
