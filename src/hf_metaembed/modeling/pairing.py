"""Pair architectures: how the fused unit states of the segments of a sample become one pooled vector.

A batch is a flat list of segments (what each backbone read), laid out per sample as the architecture's `layout`
says: `single` one segment, `joined` one segment holding every chain of both sides (`sc`), `sides` one segment per
side with its chains joined (`ec`, `pad`), `chains` one segment per chain (`hp`). `segment_sample_index (segments,)`
and `segment_side_index (segments,)` say which sample and side (0 ligand, 1 receptor) each segment belongs to.

Every architecture maps the unit encoder's output `unit_states (segments, units, dim)`, `unit_mask (segments, units)`
and those indices to `pooled (samples, output_dim)`. It declares where the unit encoder stage runs before it
(`encoder_scope`: per segment, or over the two sides joined for `ec`), but never runs it. Nothing loops over samples
or chains in Python: segments are placed into padded per-sample tensors with index arithmetic.

The defaults reproduce the study's reference modules (Proteinea/ppiseq, `ppiseq/models/convbert/` with
`training/config/train_config.yaml`); each class says which settings, and docs/PAPER.md lists every deliberate
difference. Release 0.1's variants stay reachable by name (`legacy_config`, and the `v0.1` preset).

Adding an architecture: one `Pairing` subclass decorated with `@PAIRINGS.register("name")`, taking `(config, dim)`,
with its `layout`, settings, validation and card text (registry.py).
"""

from typing import ClassVar

import torch
from torch import nn

from .fusion import unit_size
from .pooling import POOLERS, build_pooler
from .registry import Block, check_choice, check_heads, new_registry
from .segments import LAYOUTS, check_segments, count_values, join_sides, side_tensors, size_of

PAIRINGS = new_registry("architecture", "architecture")


def list_architectures() -> list[str]:
    """Names accepted by `MetaEmbedConfig(architecture=...)`."""
    return PAIRINGS.names()


def silu_feed_forward(dim: int, hidden: int, bias: bool) -> nn.Sequential:
    """The reference's feed-forward block after the sides meet: Linear - SiLU - Linear."""
    return nn.Sequential(nn.Linear(dim, hidden, bias=bias), nn.SiLU(), nn.Linear(hidden, dim, bias=bias))


class Pairing(Block, nn.Module):
    """Base class. Subclasses set `layout` and define `pool(unit_states, unit_mask, samples, group) -> pooled`
    (`group` as `check_segments` returns it), and `encoder_scope` where the unit encoder stage should not read every
    segment alone.
    """

    layout: ClassVar[str] = "sides"
    is_pair: ClassVar[bool] = True
    default_pooling: ClassVar[str] = "attention"

    @classmethod
    def encoder_scope(cls, config) -> str:
        """Where the unit encoder stage runs for this architecture: `"segments"` (each segment alone) or `"joined
        sides"` (per sample, the ligand's units followed by the receptor's)."""
        return "segments"

    def __init__(self, config, dim: int) -> None:
        super().__init__()
        self.output_dim = dim

    @property
    def name(self) -> str:
        return type(self).registered_name

    @classmethod
    def check_config(cls, config, dims: list[int]) -> None:
        if cls.layout not in LAYOUTS:
            name = cls.registered_name
            raise ValueError(f"architecture {name!r} has layout {cls.layout!r}; choose one of {LAYOUTS}")

    def forward(
        self,
        unit_states: torch.Tensor,
        unit_mask: torch.Tensor,
        segment_sample_index: torch.Tensor | None = None,
        segment_side_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`unit_states (segments, units, dim)` (refined by the unit encoder stage) -> `(samples, output_dim)`."""
        samples, group = self.check_segments(unit_mask, segment_sample_index, segment_side_index)
        return self.pool(unit_states, unit_mask, samples, group)

    def check_segments(
        self, unit_mask: torch.Tensor, segment_sample_index: torch.Tensor | None, segment_side_index
    ) -> tuple[int, torch.Tensor | None]:
        """Check that the segments describe complete samples laid out as `layout` says; return `(samples, group)`
        (`segments.check_segments`)."""
        if not self.is_pair:
            return unit_mask.shape[0], None
        return check_segments(unit_mask, segment_sample_index, segment_side_index, self.layout, self.name)


@PAIRINGS.register("single")
class SinglePairing(Pairing):
    """One segment per sample: pool its units."""

    layout = "single"
    is_pair = False
    default_pooling = "mean"
    card_text = "Each input is one sequence; its units are pooled into one vector."

    def __init__(self, config, dim: int) -> None:
        super().__init__(config, dim)
        self.pooler = build_pooler(config.pooling, dim)
        self.output_dim = self.pooler.output_size(dim)  # wider for a composite pooling

    def check_segments(self, unit_mask, segment_sample_index, segment_side_index):
        if segment_side_index is not None and bool((segment_side_index != 0).any()):
            raise ValueError(
                "architecture 'single' got receptor segments (segment_side_index has 1s): this batch holds "
                "ligand/receptor complexes; build the model with a pair architecture (sc, ec, hp, pad)"
            )
        return super().check_segments(unit_mask, segment_sample_index, segment_side_index)

    def pool(self, unit_states, unit_mask, samples, group):
        pooled, _ = self.pooler(unit_states, unit_mask)
        return pooled


@PAIRINGS.register("sc")
class SequenceConcatenation(Pairing):
    """`sc`: every chain of both sides was joined into one input (the processor puts each backbone's separator between
    chains), so the backbones and the unit encoder read the whole complex at once; its units are pooled.

    Reference: `SequenceConcatConvBERTModel` (ConvBERT over the joined complex, pooler, output layer).
    """

    layout = "joined"
    card_text = (
        "Sequences concatenation (sc): all chains of both sides are joined into one input and read together; its "
        "units are pooled."
    )

    def __init__(self, config, dim: int) -> None:
        super().__init__(config, dim)
        self.pooler = build_pooler(config.pooling, dim)

    def pool(self, unit_states, unit_mask, samples, group):
        pooled, _ = self.pooler(unit_states, unit_mask)  # (segments, dim): one segment per sample
        sample = torch.div(group, 2, rounding_mode="floor")
        return pooled.new_zeros(samples, pooled.shape[1]).index_copy(0, sample, pooled)


@PAIRINGS.register("ec")
class EmbeddingConcatenation(Pairing):
    """`ec`: each side (chains joined) was read separately; per sample the two sides' unit sequences are concatenated.

    `ec_mode="token"` (the reference's `concat_first: true`) joins the two unit sequences (ligand units, then receptor
    units, no gap), runs the unit encoder over the joined sequence so the sides attend to each other, and pools it;
    `"pooled"` encodes and pools each side and concatenates the two vectors (output `2 * dim`, ligand first). Then the
    reference's head block Linear - SiLU (`ec_ffn="silu"`, with bias) before the output layer.

    Reference: `EmbedConcatConvBERTModel` (output `Linear - SiLU - Linear`). Release 0.1 ran the unit encoder per side
    and had no feed-forward block (`ec_encode_joined=False`, `ec_ffn="none"`).
    """

    layout = "sides"
    config_fields = {"ec_mode": "token", "ec_encode_joined": True, "ec_ffn": "silu"}
    legacy_config = {"ec_encode_joined": False, "ec_ffn": "none"}
    card_text = (
        "Embeddings concatenation (ec): each side is read separately, the two sides' residue states are "
        "concatenated and read together, pooled, then a Linear-SiLU block."
    )

    @classmethod
    def check_config(cls, config, dims: list[int]) -> None:
        check_choice(config.ec_mode, ("token", "pooled"), "ec_mode")
        check_choice(config.ec_ffn, ("silu", "none"), "ec_ffn")

    def __init__(self, config, dim: int) -> None:
        super().__init__(config, dim)
        self.mode = config.ec_mode
        self.encode_joined = config.ec_encode_joined and self.mode == "token"
        self.pooler = build_pooler(config.pooling, dim)
        self.output_dim = 2 * dim if self.mode == "pooled" else dim
        if config.ec_ffn == "silu":
            self.feed_forward = nn.Sequential(nn.Linear(self.output_dim, self.output_dim), nn.SiLU())

    @classmethod
    def encoder_scope(cls, config) -> str:
        return "joined sides" if config.ec_encode_joined and config.ec_mode == "token" else "segments"

    def pool(self, unit_states, unit_mask, samples, group):
        if self.mode == "pooled":
            states, mask = side_tensors(unit_states, unit_mask, group, samples)  # (samples, 2, units, dim)
            pooled, _ = self.pooler(states.flatten(0, 1), mask.flatten(0, 1))  # (samples * 2, dim)
            pooled = pooled.view(samples, -1)
        else:  # the ligand's real units directly followed by the receptor's (a position-aware pooler sees no gap)
            joined, joined_mask, _ = join_sides(unit_states, unit_mask, group, samples)
            pooled, _ = self.pooler(joined, joined_mask)
        return self.feed_forward(pooled) if hasattr(self, "feed_forward") else pooled


@PAIRINGS.register("hp")
class HierarchicalPooling(Pairing):
    """`hp`: every chain was read (and unit-encoded) separately. Pool residues within each chain (`pooling`), then the
    chains of each side (`chain_pooling`), combine the two sides (`side_combine`: with ligand vector l and receptor
    vector r, `"concat"` [l; r], `"mean"` (l + r) / 2, `"add"` l + r; the reference's `aggregation_method`, accepted
    under that name too), then the feed-forward block Linear - SiLU - Linear (`hp_ffn="silu"`, no bias) so ligand and
    receptor meet non-additively.

    Reference: `HierarchicalPoolingConvBERTModel` with `hierarchical_pooling_config` (`chains_pooler: attention`,
    `use_ffn: true`, `bias: false`, `aggregation_method: concat`; poolers shared by the sides at the reference's HEAD,
    one per side before 2025-03-17: `hp_separate_side_poolers`, the presets `paper` and `paper-2025-03-09`; the
    default keeps one per side). Release 0.1 shared the poolers between sides and had no feed-forward block
    (`hp_separate_side_poolers=False`, `hp_ffn="none"`).

    Chains are placed into a padded `(samples * 2, max_chains, dim)` tensor by index arithmetic, so sides with
    different chain counts share one batch and nothing loops over chains.
    """

    layout = "chains"
    config_fields = {
        "chain_pooling": "attention",
        "side_combine": "concat",
        "hp_ffn": "silu",
        "hp_ffn_bias": False,
        "hp_separate_side_poolers": True,
    }
    legacy_config = {"hp_ffn": "none", "hp_separate_side_poolers": False}
    config_aliases = {"aggregation_method": "side_combine"}
    card_text = (
        "Hierarchical pooling (hp): every chain is read separately, residues are pooled per chain, chains per side, "
        "the two sides combined and passed through a Linear-SiLU-Linear block."
    )

    @classmethod
    def check_config(cls, config, dims: list[int]) -> None:
        POOLERS.check(config.chain_pooling, "chain_pooling")
        check_choice(config.side_combine, ("concat", "add", "mean"), "side_combine")
        check_choice(config.hp_ffn, ("silu", "none"), "hp_ffn")

    def __init__(self, config, dim: int) -> None:
        super().__init__(config, dim)
        # `pooler` and `chain_pooler` serve the ligand (and the receptor too when the sides share poolers)
        self.pooler = build_pooler(config.pooling, dim)
        self.chain_pooler = build_pooler(config.chain_pooling, dim)
        if config.hp_separate_side_poolers:
            self.receptor_pooler = build_pooler(config.pooling, dim)
            self.receptor_chain_pooler = build_pooler(config.chain_pooling, dim)
        self.side_combine = config.side_combine
        self.output_dim = 2 * dim if self.side_combine == "concat" else dim
        if config.hp_ffn == "silu":
            self.feed_forward = silu_feed_forward(self.output_dim, self.output_dim, config.hp_ffn_bias)

    def by_side(self, kind: str, states, mask, side: torch.Tensor) -> torch.Tensor:
        """Pool every row with its side's `kind` pooler (`"pooler"` or `"chain_pooler"`)."""
        ligand = getattr(self, kind)(states, mask)[0]
        receptor_pooler = getattr(self, f"receptor_{kind}", None)
        if receptor_pooler is None:
            return ligand
        return torch.where(side.unsqueeze(-1) == 0, ligand, receptor_pooler(states, mask)[0])

    def pool(self, unit_states, unit_mask, samples, group):
        chain_vectors = self.by_side("pooler", unit_states, unit_mask, group % 2)  # (segments, dim)
        # rank of each chain within its (sample, side): position in a sort by (group, batch position) minus the
        # group's start (the keys are unique, so the sort needs no stability, which the ONNX export has not)
        counts = count_values(group, 2 * samples)
        starts = torch.cumsum(counts, dim=0) - counts
        position = torch.arange(group.shape[0], device=group.device)
        order = torch.argsort(group * group.shape[0] + position)
        rank = torch.empty_like(group)
        rank[order] = position - starts[group[order]]
        max_chains = size_of(counts.max())
        chains = chain_vectors.new_zeros(2 * samples, max_chains, chain_vectors.shape[1])
        chains[group, rank] = chain_vectors
        chain_mask = torch.zeros(2 * samples, max_chains, dtype=torch.bool, device=group.device)
        chain_mask[group, rank] = True
        slot_side = torch.arange(2 * samples, device=group.device) % 2
        sides = self.by_side("chain_pooler", chains, chain_mask, slot_side).view(samples, 2, -1)
        if self.side_combine == "concat":
            combined = sides.flatten(1)
        elif self.side_combine == "add":
            combined = sides.sum(dim=1)
        else:
            combined = sides.mean(dim=1)
        return self.feed_forward(combined) if hasattr(self, "feed_forward") else combined


@PAIRINGS.register("pad")
class PooledAttentionAddition(Pairing):
    """`pad`: each side (chains joined) was read and unit-encoded separately. The ligand's units attend to the
    receptor's and the receptor's to the ligand's (`pad_num_heads` heads, no bias, one attention shared by both
    directions unless `pad_shared_attention=False`) with a residual; each side is pooled over its real units, the two
    vectors added, and the feed-forward block Linear - SiLU - Linear applied (`pad_ffn="silu"`, hidden size
    `pad_ffn_multiplier * dim`).

    Reference: `AttnPoolAddConvBERTModel` with `attn_pool_add_config` (8 heads, `bias=False`, shared attention and
    ConvBERT, `use_ffn: true`, `ffn_multiplier: 1`). Padded keys are masked as in the reference; padded queries are
    zeroed after the attention (the reference leaves them, harmless there since its pooler masks them too). Release
    0.1 used 4 heads with bias and a GELU residual block with LayerNorm (`pad_ffn="residual"`).
    """

    layout = "sides"
    config_fields = {
        "pad_num_heads": 8,
        "pad_shared_attention": True,
        "pad_attention_bias": False,
        "pad_ffn": "silu",
        "pad_ffn_multiplier": 1,
    }
    legacy_config = {"pad_num_heads": 4, "pad_attention_bias": True, "pad_ffn": "residual"}
    card_text = (
        "Pooled attention addition (pad): each side is read separately, the sides' residues cross-attend with a "
        "residual, each side is pooled, the two vectors added and passed through a Linear-SiLU-Linear block."
    )

    @classmethod
    def check_config(cls, config, dims: list[int]) -> None:
        if config.level != "unit":
            raise ValueError("architecture 'pad' attends between residues and needs level='unit'")
        check_heads("pad_num_heads", config.pad_num_heads, unit_size(config, dims), "unit size")
        check_choice(config.pad_ffn, ("silu", "residual", "none"), "pad_ffn")

    def __init__(self, config, dim: int) -> None:
        super().__init__(config, dim)
        heads, bias = config.pad_num_heads, config.pad_attention_bias
        self.ligand_attention = nn.MultiheadAttention(dim, heads, bias=bias, batch_first=True)
        if not config.pad_shared_attention:
            self.receptor_attention = nn.MultiheadAttention(dim, heads, bias=bias, batch_first=True)
        self.pooler = build_pooler(config.pooling, dim)
        self.ffn = config.pad_ffn
        if self.ffn == "silu":
            self.feed_forward = silu_feed_forward(dim, dim * config.pad_ffn_multiplier, bias=True)
        elif self.ffn == "residual":
            self.feed_forward = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
            self.norm = nn.LayerNorm(dim)

    def attend(
        self, attention: nn.MultiheadAttention, queries: torch.Tensor, query_mask: torch.Tensor, keys, key_mask
    ) -> torch.Tensor:
        """`queries (samples, units, dim)` attend to `keys (samples, units, dim)`; residual; padded queries zeroed."""
        attended, _ = attention(queries, keys, keys, key_padding_mask=~key_mask, need_weights=False)
        return (queries + attended) * query_mask.unsqueeze(-1).to(queries.dtype)

    def pool(self, unit_states, unit_mask, samples, group):
        states, mask = side_tensors(unit_states, unit_mask.bool(), group, samples)
        ligand, receptor = states[:, 0], states[:, 1]  # (samples, units, dim)
        ligand_mask, receptor_mask = mask[:, 0], mask[:, 1]
        receptor_attention = getattr(self, "receptor_attention", self.ligand_attention)
        ligand = self.attend(self.ligand_attention, ligand, ligand_mask, receptor, receptor_mask)
        receptor = self.attend(receptor_attention, receptor, receptor_mask, states[:, 0], ligand_mask)
        pooled, _ = self.pooler(torch.cat([ligand, receptor]), torch.cat([ligand_mask, receptor_mask]))
        combined = pooled[:samples] + pooled[samples:]  # (samples, dim)
        if self.ffn == "silu":
            return self.feed_forward(combined)
        if self.ffn == "residual":
            return self.norm(combined + self.feed_forward(combined))
        return combined


def build_pairing(config, dim: int) -> Pairing:
    """Instantiate the architecture named by `config.architecture` over unit states of size `dim`."""
    return PAIRINGS.get_class(config.architecture)(config, dim)
