"""Segments: what one backbone reads, per sample, in the order `MetaEmbedProcessor` emits them, and their content keys.

A segment is a sequence (`single`), a chain (`hp`), a side with its chains joined (`ec`, `pad`) or a whole complex
joined (`sc`). The cache stores each unique segment once, under a key of its content.
"""

import hashlib
import json
from collections.abc import Sequence

from ..modeling.pairing import PAIRINGS, list_architectures
from ..modeling.segments import SIDE_NAMES, input_segments


def pair_architectures() -> list[str]:
    """Registered architectures that compare a ligand and a receptor (all but those reading plain sequences)."""
    return [name for name in list_architectures() if PAIRINGS.get_class(name).is_pair]


def sample_segments(
    architecture: str,
    sequences: Sequence[str] | None = None,
    ligand: Sequence[Sequence[str]] | None = None,
    receptor: Sequence[Sequence[str]] | None = None,
) -> list[list[tuple[int, list[str]]]]:
    """Per sample, its segments as `(side, chains)` in the order `MetaEmbedProcessor` emits them (the processor's own
    `segments.input_segments`, so the cache and the processor can never lay a sample out differently), with every
    chain checked to be a string.

    `single`: one segment `[sequence]`; `sc`: ligand and receptor chains joined; `ec`/`pad`: one per side; `hp`: one
    per chain. Side is 0 (ligand) or 1 (receptor).
    """
    samples = input_segments(sequences, ligand, receptor, architecture, PAIRINGS.get_class(architecture))
    for index, segments in enumerate(samples):
        for side, chains in segments:
            for chain in chains:
                if not isinstance(chain, str):
                    where = f" ({SIDE_NAMES[side]})" if PAIRINGS.get_class(architecture).is_pair else ""
                    raise TypeError(
                        f"sample {index}{where}: expected a string, got {type(chain).__name__} ({chain!r:.40})"
                    )
    return samples


def segment_key(chains: Sequence[str], unit_types: Sequence[str]) -> str:
    """Content key of a segment: equal for chains the processor reads identically (case and spacing of protein
    sequences, spacing of text), different whenever the chains or their split into chains differ."""
    if "word" in unit_types:
        canonical = [" ".join(chain.split()) for chain in chains]
    else:
        canonical = ["".join(chain.split()).upper() for chain in chains]
    return hashlib.sha256(json.dumps(canonical).encode("utf-8")).hexdigest()[:32]


def segment_length(chains: Sequence[str], unit_types: Sequence[str]) -> int:
    """Units of a segment as given (residues, or words for text backbones), before any truncation."""
    if "word" in unit_types:
        return sum(len(chain.split()) for chain in chains)
    return sum(len("".join(chain.split())) for chain in chains)


__all__ = ["pair_architectures", "sample_segments", "segment_key", "segment_length"]
