"""How the segments of a batch describe samples of ligand/receptor complexes: the layouts, their validation, and
the index arithmetic that regroups segments by sample and side (no Python loop over samples or chains).

Sizes read from the data (samples, chains per side, joined length) are taken with `size_of` and counts with
`count_values` (not `int()` and `torch.bincount`), so a traced graph (the ONNX export) keeps them dynamic.

Model code (copied next to a saved model for `trust_remote_code`): imports torch only.
"""

from collections.abc import Sequence

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


def count_values(index: torch.Tensor, size: int) -> torch.Tensor:
    """`torch.bincount(index, minlength=size)` for `index (n,)` of values in `[0, size)`, as a scatter-add of ones
    that a traced graph can hold: `(size,)` counts."""
    counts = torch.zeros(size, dtype=torch.long, device=index.device)
    return counts.scatter_add(0, index, torch.ones_like(index))


def size_of(value: torch.Tensor) -> int:
    """`int(value)` of a 0-dim integer tensor, read as the length of a range of that many values: the same int, but
    a traced graph keeps it dynamic where `int()` would freeze the example batch's value into it."""
    return torch.arange(value, device=value.device).shape[0]


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
    samples = size_of(sample.max() + 1)
    per_sample = count_values(sample, samples)
    if (per_sample == 0).any():
        missing = int((per_sample == 0).nonzero()[0])
        raise ValueError(
            f"sample {missing} has no segments: segment_sample_index must number samples 0..{samples - 1} without gaps"
        )
    group = 2 * sample + side
    per_group = count_values(group, 2 * samples).view(samples, 2)
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
    position = (real.long().cumsum(dim=1) - 1)[segment_of, unit_of]
    joined_position = offset[segment_of] + position
    joined_sample = sample[segment_of]
    width = size_of(side_lengths.sum(dim=1).max().clamp(min=1))
    joined = unit_states.new_zeros(samples, width, unit_states.shape[-1])
    joined[joined_sample, joined_position] = unit_states[segment_of, unit_of]
    joined_mask = torch.zeros(samples, width, dtype=unit_mask.dtype, device=unit_mask.device)
    joined_mask[joined_sample, joined_position] = 1
    return joined, joined_mask, (segment_of, unit_of, joined_sample, joined_position)


def input_segments(sequences, ligand, receptor, architecture: str, pairing: type) -> list[list[tuple[int, list]]]:
    """Per sample, its segments as `(side, chains)`, laid out as the architecture's `layout` says (`pairing` is its
    registered class): plain `sequences` for `single`, `ligand`/`receptor` lists of chains for pair architectures.
    Input of the wrong form is an error naming the sample and what to pass."""
    if sequences is not None:
        if ligand is not None or receptor is not None:
            raise ValueError("pass either `sequences` or `ligand`/`receptor`, not both")
        if isinstance(sequences, str):
            sequences = [sequences]
        sequences = as_list(sequences, "sequences")
        if pairing.is_pair:
            example = f" ({str(sequences[0])!r:.30})" if len(sequences) else ""
            raise ValueError(
                f"sample 0 is a plain sequence{example} but architecture {architecture!r} "
                "compares two sides: call the processor with ligand=[[chain, ...], ...] and "
                "receptor=[[chain, ...], ...]"
            )
        return [[(0, [sequence])] for sequence in sequences]
    if ligand is None or receptor is None:
        raise ValueError("pass `sequences`, or both `ligand` and `receptor`")
    if not pairing.is_pair:
        raise ValueError(
            "sample 0 is a ligand/receptor complex but architecture 'single' reads plain sequences: call the "
            "processor with a list of sequences, or use a pair architecture (sc, ec, hp, pad) for complexes"
        )
    ligand, receptor = as_list(ligand, "ligand"), as_list(receptor, "receptor")
    if len(ligand) != len(receptor):
        missing = "receptor" if len(ligand) > len(receptor) else "ligand"
        raise ValueError(
            f"ligand lists {len(ligand)} complexes but receptor lists {len(receptor)}: sample "
            f"{min(len(ligand), len(receptor))} has no {missing}; give one of each per sample"
        )
    samples = []
    for index, sides in enumerate(zip(ligand, receptor)):
        for side, chains in zip(SIDE_NAMES, sides):
            if isinstance(chains, str) or not isinstance(chains, Sequence):
                raise ValueError(
                    f"sample {index}: the {side} must be a list of chain strings, got {type(chains).__name__} "
                    f"({chains!r:.30}); wrap a single chain as [chain]"
                )
            if not chains:
                raise ValueError(f"sample {index}: the {side} has no chains; every side needs at least one chain")
        samples.append(segments_of(list(sides[0]), list(sides[1]), pairing.layout))
    return samples


def as_list(value, name: str) -> list:
    """A batch argument as a list; a string or a non-iterable is a `TypeError` that says what to pass."""
    if isinstance(value, str | bytes | dict) or not hasattr(value, "__iter__"):
        raise TypeError(f"`{name}` must be a list, got {type(value).__name__} ({value!r:.40})")
    return list(value)
