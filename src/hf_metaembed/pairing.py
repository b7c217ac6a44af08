"""Pair architectures: how the fused unit states of the segments of a sample become one pooled vector.

A batch is a flat list of segments (what each backbone read): one per sample for `single` and `sc`, one per side for
`ec` and `pad`, one per chain for `hp`. `segment_sample_index (segments,)` and `segment_side_index (segments,)` say
which sample and side (0 ligand, 1 receptor) each segment belongs to.

Every architecture maps `unit_states (segments, units, dim)`, `unit_mask (segments, units)` and those indices to
`pooled (samples, output_dim)`.
"""

import torch
from torch import nn

from .pooling import build_pooler
from .registry import Registry

PAIRINGS = Registry("architecture")


def list_architectures() -> list[str]:
    """Names accepted by `MetaEmbedConfig(architecture=...)`."""
    return PAIRINGS.names()


class Pairing(nn.Module):
    """Base class. `is_pair` says whether inputs come as ligand/receptor sides."""

    is_pair = True

    def __init__(self, config, dim: int) -> None:
        super().__init__()
        self.output_dim = dim


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
        pooled, _ = self.pooler(unit_states, unit_mask)
        return pooled


def build_pairing(config, dim: int) -> Pairing:
    """Instantiate the architecture named by `config.architecture` over unit states of size `dim`."""
    return PAIRINGS.get_class(config.architecture)(config, dim)
