"""Pair architectures: how the fused unit states of the segments of a sample become one pooled vector.

A batch is a flat list of segments (what each backbone read): one per sample for `single` and `sc`, one per side for
`ec` and `pad`, one per chain for `hp`. `segment_sample_index (segments,)` and `segment_side_index (segments,)` say
which sample and side (0 ligand, 1 receptor) each segment belongs to.

Every architecture maps `unit_states (segments, units, dim)`, `unit_mask (segments, units)` and those indices to
`pooled (samples, output_dim)`, and sets `output_dim`. Nothing loops over samples or chains in Python: segments are
placed into padded per-sample tensors with index arithmetic.

Adding an architecture: one `Pairing` subclass decorated with `@PAIRINGS.register("name")`, taking `(config, dim)`.
"""

import torch
from torch import nn

from .pooling import build_pooler
from .registry import Registry

PAIRINGS = Registry("architecture")
SIDE_NAMES = ("ligand", "receptor")


def list_architectures() -> list[str]:
    """Names accepted by `MetaEmbedConfig(architecture=...)`."""
    return PAIRINGS.names()


class Pairing(nn.Module):
    """Base class. `is_pair` says whether inputs come as ligand/receptor sides."""

    is_pair = True
    name = "single"

    def __init__(self, config, dim: int) -> None:
        super().__init__()
        self.output_dim = dim

    def segment_layout(
        self,
        unit_mask: torch.Tensor,
        segment_sample_index: torch.Tensor | None,
        segment_side_index: torch.Tensor | None,
        per_side: str,
    ) -> tuple[int, torch.Tensor]:
        """Check that the segments describe complete samples and return `(samples, group)`.

        `group (segments,)` is `2 * sample + side`, the (sample, side) slot of each segment. `per_side` is `"one"`
        (exactly one segment per side: `ec`, `pad`), `"some"` (at least one: `hp`) or `"joined"` (exactly one segment
        per sample holding both sides: `sc`). Raises a `ValueError` naming the sample and what is wrong.
        """
        name = self.name
        if segment_sample_index is None or segment_side_index is None:
            raise ValueError(
                f"architecture {name!r} needs `segment_sample_index` and `segment_side_index` (segments,): build the "
                "batch with MetaEmbedProcessor(architecture=...) called with ligand=[[chain, ...], ...] and "
                "receptor=[[chain, ...], ...]"
            )
        segments = unit_mask.shape[0]
        for field, index in (
            ("segment_sample_index", segment_sample_index),
            ("segment_side_index", segment_side_index),
        ):
            if index.dim() != 1 or index.shape[0] != segments:
                raise ValueError(f"`{field}` must have shape (segments,) = ({segments},); got {tuple(index.shape)}")
        sample = segment_sample_index.to(unit_mask.device).long()
        side = segment_side_index.to(unit_mask.device).long()
        if segments == 0:
            raise ValueError(f"architecture {name!r} got an empty batch (no segments)")
        if (sample < 0).any():
            raise ValueError(f"segment_sample_index holds negative values {sample[sample < 0].unique().tolist()}")
        bad_side = (side != 0) & (side != 1)
        if bad_side.any():
            first = int(bad_side.nonzero()[0])
            raise ValueError(
                f"sample {int(sample[first])}: segment side {int(side[first])} is neither 0 (ligand) nor 1 (receptor)"
            )
        empty = ~unit_mask.bool().any(dim=1)
        if empty.any():
            first = int(empty.nonzero()[0])
            raise ValueError(
                f"sample {int(sample[first])} ({SIDE_NAMES[int(side[first])]}): a segment has no real unit "
                "(all of its unit_mask is 0); remove empty chains"
            )
        samples = int(sample.max()) + 1
        per_sample = torch.bincount(sample, minlength=samples)
        if (per_sample == 0).any():
            missing = int((per_sample == 0).nonzero()[0])
            raise ValueError(
                f"sample {missing} has no segments: segment_sample_index must number samples 0..{samples - 1} "
                "without gaps"
            )
        group = 2 * sample + side
        per_group = torch.bincount(group, minlength=2 * samples).view(samples, 2)
        if per_side == "joined":
            if (per_sample != 1).any():
                first = int((per_sample != 1).nonzero()[0])
                raise ValueError(
                    f"sample {first} has {int(per_sample[first])} segments; architecture {name!r} joins both sides "
                    "into one input per sample: build the batch with MetaEmbedProcessor(architecture='sc')"
                )
            return samples, group
        if (per_group == 0).any():
            first_sample, first_side = (int(v) for v in (per_group == 0).nonzero()[0])
            raise ValueError(
                f"sample {first_sample} has no {SIDE_NAMES[first_side]} segment; architecture {name!r} needs both "
                "sides of every complex"
            )
        if per_side == "one" and (per_group > 1).any():
            first_sample, first_side = (int(v) for v in (per_group > 1).nonzero()[0])
            raise ValueError(
                f"sample {first_sample} has {int(per_group[first_sample, first_side])} {SIDE_NAMES[first_side]} "
                f"segments; architecture {name!r} reads each side as one input with its chains joined: build the "
                f"batch with MetaEmbedProcessor(architecture={name!r})"
            )
        return samples, group


def _side_tensors(
    unit_states: torch.Tensor, unit_mask: torch.Tensor, group: torch.Tensor, samples: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Place the one segment of each (sample, side) into `(samples, 2, units, dim)`, its mask `(samples, 2, units)`."""
    order = torch.empty(2 * samples, dtype=torch.long, device=group.device)
    order[group] = torch.arange(group.shape[0], device=group.device)
    states = unit_states[order].view(samples, 2, *unit_states.shape[1:])
    mask = unit_mask[order].view(samples, 2, unit_mask.shape[1])
    return states, mask


@PAIRINGS.register("single")
class SinglePairing(Pairing):
    """One segment per sample: pool its units."""

    is_pair = False

    def __init__(self, config, dim: int) -> None:
        super().__init__(config, dim)
        self.pooler = build_pooler(config.pooling, dim)

    def forward(
        self,
        unit_states: torch.Tensor,
        unit_mask: torch.Tensor,
        segment_sample_index: torch.Tensor | None = None,
        segment_side_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if segment_side_index is not None and bool((segment_side_index != 0).any()):
            raise ValueError(
                "architecture 'single' got receptor segments (segment_side_index has 1s): this batch holds "
                "ligand/receptor complexes; build the model with a pair architecture (sc, ec, hp, pad)"
            )
        pooled, _ = self.pooler(unit_states, unit_mask)
        return pooled


@PAIRINGS.register("sc")
class SequenceConcatenation(Pairing):
    """`sc`: every chain of both sides was joined into one input (the processor puts each backbone's separator between
    chains), so the backbones and any unit encoder read the whole complex at once; pool its units."""

    name = "sc"

    def __init__(self, config, dim: int) -> None:
        super().__init__(config, dim)
        self.pooler = build_pooler(config.pooling, dim)

    def forward(
        self,
        unit_states: torch.Tensor,
        unit_mask: torch.Tensor,
        segment_sample_index: torch.Tensor | None = None,
        segment_side_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        samples, _ = self.segment_layout(unit_mask, segment_sample_index, segment_side_index, "joined")
        pooled, _ = self.pooler(unit_states, unit_mask)  # (segments, dim)
        sample = segment_sample_index.to(pooled.device).long()
        return pooled.new_zeros(samples, pooled.shape[1]).index_copy(0, sample, pooled)


@PAIRINGS.register("ec")
class EmbeddingConcatenation(Pairing):
    """`ec`: each side (chains joined) was read separately; per sample, concatenate the two sides.

    `ec_mode="token"` joins the two unit sequences and pools them together (output `dim`); `"pooled"` pools each side
    and concatenates the two vectors (output `2 * dim`, ligand first).
    """

    name = "ec"

    def __init__(self, config, dim: int) -> None:
        super().__init__(config, dim)
        self.mode = config.ec_mode
        self.pooler = build_pooler(config.pooling, dim)
        self.output_dim = 2 * dim if self.mode == "pooled" else dim

    def forward(
        self,
        unit_states: torch.Tensor,
        unit_mask: torch.Tensor,
        segment_sample_index: torch.Tensor | None = None,
        segment_side_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        samples, group = self.segment_layout(unit_mask, segment_sample_index, segment_side_index, "one")
        states, mask = _side_tensors(unit_states, unit_mask, group, samples)  # (samples, 2, units, dim)
        if self.mode == "pooled":
            pooled, _ = self.pooler(states.flatten(0, 1), mask.flatten(0, 1))  # (samples * 2, dim)
            return pooled.view(samples, -1)
        # (samples, 2 * units, dim): ligand units then receptor units; the padding between them is masked, and every
        # pooler is blind to position, so this equals pooling the gap-free concatenation
        pooled, _ = self.pooler(states.flatten(1, 2), mask.flatten(1, 2))
        return pooled


@PAIRINGS.register("hp")
class HierarchicalPooling(Pairing):
    """`hp`: every chain was read separately. Pool residues within each chain (`pooling`), then the chains of each side
    (`chain_pooling`: attention or mean), then combine the two sides (`side_combine`: concat, add or mean).

    Chains are placed into a padded `(samples * 2, max_chains, dim)` tensor by index arithmetic, so sides with
    different chain counts share one batch and nothing loops over chains.
    """

    name = "hp"

    def __init__(self, config, dim: int) -> None:
        super().__init__(config, dim)
        self.pooler = build_pooler(config.pooling, dim)
        self.chain_pooler = build_pooler(config.chain_pooling, dim)
        self.side_combine = config.side_combine
        self.output_dim = 2 * dim if self.side_combine == "concat" else dim

    def forward(
        self,
        unit_states: torch.Tensor,
        unit_mask: torch.Tensor,
        segment_sample_index: torch.Tensor | None = None,
        segment_side_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        samples, group = self.segment_layout(unit_mask, segment_sample_index, segment_side_index, "some")
        chain_vectors, _ = self.pooler(unit_states, unit_mask)  # (segments, dim)
        # rank of each chain within its (sample, side): position in a stable sort by group minus the group's start
        counts = torch.bincount(group, minlength=2 * samples)
        starts = torch.cumsum(counts, dim=0) - counts
        order = torch.argsort(group, stable=True)
        rank = torch.empty_like(group)
        rank[order] = torch.arange(group.shape[0], device=group.device) - starts[group[order]]
        max_chains = int(counts.max())
        chains = chain_vectors.new_zeros(2 * samples, max_chains, chain_vectors.shape[1])
        chains[group, rank] = chain_vectors
        chain_mask = torch.zeros(2 * samples, max_chains, dtype=torch.bool, device=group.device)
        chain_mask[group, rank] = True
        sides, _ = self.chain_pooler(chains, chain_mask)
        sides = sides.view(samples, 2, -1)  # (samples, 2, dim)
        if self.side_combine == "concat":
            return sides.flatten(1)
        if self.side_combine == "add":
            return sides.sum(dim=1)
        return sides.mean(dim=1)


@PAIRINGS.register("pad")
class PooledAttentionAddition(Pairing):
    """`pad`: each side (chains joined) was read separately. The ligand's units attend to the receptor's and the
    receptor's to the ligand's (one shared `nn.MultiheadAttention`, or one per direction with
    `pad_shared_attention=False`), with a residual; each side is pooled over its real units, the two vectors added,
    and a residual feed-forward block applied.

    Padded keys are masked in the attention and padded queries are zeroed after it, so padding never reaches a real
    unit or the pooled vector. With shared attention the output is symmetric in ligand and receptor.
    """

    name = "pad"

    def __init__(self, config, dim: int) -> None:
        super().__init__(config, dim)
        heads = config.pad_num_heads
        if heads < 1 or dim % heads:
            divisors = [h for h in range(1, min(dim, 16) + 1) if dim % h == 0]
            raise ValueError(
                f"pad_num_heads={heads} must divide the unit size {dim}; choose one of: "
                f"{', '.join(map(str, divisors))}"
            )
        self.ligand_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        if not config.pad_shared_attention:
            self.receptor_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.pooler = build_pooler(config.pooling, dim)
        self.feed_forward = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.norm = nn.LayerNorm(dim)

    def attend(
        self, attention: nn.MultiheadAttention, queries: torch.Tensor, query_mask: torch.Tensor, keys, key_mask
    ) -> torch.Tensor:
        """`queries (samples, units, dim)` attend to `keys (samples, units, dim)`; residual; padded queries zeroed."""
        attended, _ = attention(queries, keys, keys, key_padding_mask=~key_mask, need_weights=False)
        return (queries + attended) * query_mask.unsqueeze(-1).to(queries.dtype)

    def forward(
        self,
        unit_states: torch.Tensor,
        unit_mask: torch.Tensor,
        segment_sample_index: torch.Tensor | None = None,
        segment_side_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        samples, group = self.segment_layout(unit_mask, segment_sample_index, segment_side_index, "one")
        states, mask = _side_tensors(unit_states, unit_mask.bool(), group, samples)
        ligand, receptor = states[:, 0], states[:, 1]  # (samples, units, dim)
        ligand_mask, receptor_mask = mask[:, 0], mask[:, 1]
        receptor_attention = getattr(self, "receptor_attention", self.ligand_attention)
        ligand = self.attend(self.ligand_attention, ligand, ligand_mask, receptor, receptor_mask)
        receptor = self.attend(receptor_attention, receptor, receptor_mask, states[:, 0], ligand_mask)
        pooled, _ = self.pooler(torch.cat([ligand, receptor]), torch.cat([ligand_mask, receptor_mask]))
        combined = pooled[:samples] + pooled[samples:]  # (samples, dim)
        return self.norm(combined + self.feed_forward(combined))


def build_pairing(config, dim: int) -> Pairing:
    """Instantiate the architecture named by `config.architecture` over unit states of size `dim`."""
    return PAIRINGS.get_class(config.architecture)(config, dim)
