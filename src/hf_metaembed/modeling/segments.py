"""How the segments of a batch describe samples of ligand/receptor complexes: the layouts, their validation, and
the index arithmetic that regroups segments by sample and side (no Python loop over samples or chains).

Model code (copied next to a saved model for `trust_remote_code`): imports torch only.
"""

import torch

SIDE_NAMES = ("ligand", "receptor")
LAYOUTS = ("single", "joined", "sides", "chains")


def segments_of(ligand: list, receptor: list, layout: str) -> list[tuple[int, list]]:
    """One complex's segments as `(side, chains)` (side 0 ligand, 1 receptor): `joined` one segment of all chains,
    `sides` one per side, `chains` one per chain."""
    if layout == "joined":
        return [(0, ligand + receptor)]
    if layout == "sides":
        return [(0, ligand), (1, receptor)]
    if layout == "chains":
        return [(0, [chain]) for chain in ligand] + [(1, [chain]) for chain in receptor]
    raise ValueError(f"layout {layout!r} reads plain sequences, not ligand/receptor complexes")


def check_segments(
    unit_mask: torch.Tensor,
    segment_sample_index: torch.Tensor | None,
    segment_side_index: torch.Tensor | None,
    layout: str,
    name: str,
) -> tuple[int, torch.Tensor]:
    """Check that the segments describe complete samples of a pair architecture `name` laid out as `layout` says;
    return `(samples, group)`.

    `group (segments,)` is `2 * sample + side`, the (sample, side) slot of each segment. Raises a `ValueError`
    naming the sample and what is wrong.
    """
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
            f"sample {missing} has no segments: segment_sample_index must number samples 0..{samples - 1} without gaps"
        )
    group = 2 * sample + side
    per_group = torch.bincount(group, minlength=2 * samples).view(samples, 2)
    if layout == "joined":
        if (per_sample != 1).any():
            first = int((per_sample != 1).nonzero()[0])
            raise ValueError(
                f"sample {first} has {int(per_sample[first])} segments; architecture {name!r} joins both sides "
                f"into one input per sample: build the batch with MetaEmbedProcessor(architecture={name!r})"
            )
        return samples, group
    if (per_group == 0).any():
        first_sample, first_side = (int(v) for v in (per_group == 0).nonzero()[0])
        raise ValueError(
            f"sample {first_sample} has no {SIDE_NAMES[first_side]} segment; architecture {name!r} needs both "
            "sides of every complex"
        )
    if layout == "sides" and (per_group > 1).any():
        first_sample, first_side = (int(v) for v in (per_group > 1).nonzero()[0])
        raise ValueError(
            f"sample {first_sample} has {int(per_group[first_sample, first_side])} {SIDE_NAMES[first_side]} "
            f"segments; architecture {name!r} reads each side as one input with its chains joined: build the "
            f"batch with MetaEmbedProcessor(architecture={name!r})"
        )
    return samples, group


def side_tensors(
    unit_states: torch.Tensor, unit_mask: torch.Tensor, group: torch.Tensor, samples: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Place the one segment of each (sample, side) into `(samples, 2, units, dim)`, its mask `(samples, 2, units)`."""
    order = torch.empty(2 * samples, dtype=torch.long, device=group.device)
    order[group] = torch.arange(group.shape[0], device=group.device)
    states = unit_states[order].view(samples, 2, *unit_states.shape[1:])
    mask = unit_mask[order].view(samples, 2, unit_mask.shape[1])
    return states, mask


def join_sides(
    unit_states: torch.Tensor, unit_mask: torch.Tensor, group: torch.Tensor, samples: int
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    """Per sample, the ligand's real units followed directly by the receptor's: `(samples, units, dim)` and its mask.

    Also returns the index `slots = (segment, unit, sample, joined position)` of every real unit, to map the joined
    rows back onto segments.
    """
    real = unit_mask.bool()
    lengths = real.sum(dim=1)  # (segments,)
    sample = torch.div(group, 2, rounding_mode="floor")
    side = group % 2
    side_lengths = torch.zeros(samples, 2, dtype=lengths.dtype, device=lengths.device)
    side_lengths[sample, side] = lengths
    offset = torch.where(side == 1, side_lengths[sample, 0], torch.zeros_like(lengths))  # receptors follow ligands
    segment_of, unit_of = real.nonzero(as_tuple=True)
    # a real unit's position among its segment's real units (units are packed from the left, so this is its index)
    position = (real.cumsum(dim=1) - 1)[segment_of, unit_of]
    joined_position = offset[segment_of] + position
    joined_sample = sample[segment_of]
    width = max(int(side_lengths.sum(dim=1).max()), 1)
    joined = unit_states.new_zeros(samples, width, unit_states.shape[-1])
    joined[joined_sample, joined_position] = unit_states[segment_of, unit_of]
    joined_mask = torch.zeros(samples, width, dtype=unit_mask.dtype, device=unit_mask.device)
    joined_mask[joined_sample, joined_position] = 1
    return joined, joined_mask, (segment_of, unit_of, joined_sample, joined_position)
