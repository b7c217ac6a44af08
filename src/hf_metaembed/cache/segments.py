"""Segments: what one backbone reads, per sample, in the order `MetaEmbedProcessor` emits them, and their content keys.

A segment is a sequence (`single`), a chain (`hp`), a side with its chains joined (`ec`, `pad`) or a whole complex
joined (`sc`). The cache stores each unique segment once, under a key of its content.
"""

import hashlib
import json
from collections.abc import Sequence

from ..modeling.pairing import PAIRINGS, layout_segments, list_architectures


def pair_architectures() -> list[str]:
    """Registered architectures that compare a ligand and a receptor (all but those reading plain sequences)."""
    return [name for name in list_architectures() if PAIRINGS.get_class(name).is_pair]


def _check_chain(chain, sample: int, where: str) -> str:
    if not isinstance(chain, str):
        raise TypeError(f"sample {sample}{where}: expected a string, got {type(chain).__name__} ({chain!r:.40})")
    return chain


def sample_segments(
    architecture: str,
    sequences: Sequence[str] | None = None,
    ligand: Sequence[Sequence[str]] | None = None,
    receptor: Sequence[Sequence[str]] | None = None,
) -> list[list[tuple[int, list[str]]]]:
    """Per sample, its segments as `(side, chains)` in the order `MetaEmbedProcessor` emits them.

    `single`: one segment `[sequence]`; `sc`: ligand and receptor chains joined; `ec`/`pad`: one per side; `hp`: one
    per chain. Side is 0 (ligand) or 1 (receptor).
    """
    if architecture not in list_architectures():
        raise ValueError(
            f"architecture {architecture!r} has no known segment layout; choose one of: "
            f"{', '.join(list_architectures())}"
        )
    if not PAIRINGS.get_class(architecture).is_pair:
        if sequences is None or ligand is not None or receptor is not None:
            raise ValueError(
                f"architecture {architecture!r} reads plain sequences: pass sequences=[...], not ligand/receptor"
            )
        sequences = [sequences] if isinstance(sequences, str) else sequences
        return [[(0, [_check_chain(s, i, "")])] for i, s in enumerate(sequences)]
    if ligand is None or receptor is None or sequences is not None:
        raise ValueError(f"architecture {architecture!r} compares two sides: pass ligand=[[chain, ...], ...] and "
                         "receptor=[[chain, ...], ...]")  # fmt: skip
    if len(ligand) != len(receptor):
        raise ValueError(
            f"ligand lists {len(ligand)} complexes but receptor lists {len(receptor)}; give one per sample"
        )
    samples = []
    for index, sides in enumerate(zip(ligand, receptor)):
        checked = []
        for name, chains in zip(("ligand", "receptor"), sides):
            if isinstance(chains, str) or not isinstance(chains, Sequence) or not chains:
                raise ValueError(
                    f"sample {index}: {name} must be a non-empty list of chain strings, got {chains!r:.60}"
                )
            checked.append([_check_chain(c, index, f" ({name})") for c in chains])
        samples.append(layout_segments(*checked, architecture))
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
