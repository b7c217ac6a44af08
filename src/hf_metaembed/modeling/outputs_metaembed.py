"""The output dataclasses of MetaEmbed models, with the shapes of their tensors.

Model code (copied next to a saved model for `trust_remote_code`): imports torch and transformers only.
"""

from dataclasses import dataclass, field

import torch
from transformers.utils import ModelOutput


@dataclass
class BackboneReading:
    """What the reading stage hands fusion (reading.py): the backbones' states on shared units.

    Args:
        states: per backbone `(segments, units, d_i)` (layers chosen or mixed; `units` is 1 when `per_sequence`).
        unit_mask: `(segments, units)` 1 for real units.
        per_sequence: each segment was read into one vector (`level="sequence"`), not one state per unit.
        read_states: the states as read, before the layer mix (`(segments, units, layers, d_i)` for a `"mix"`
            backbone): what the feature cache stores and `output_backbone_states=True` returns.
    """

    states: list[torch.Tensor] = field(default_factory=list)
    unit_mask: torch.Tensor | None = None
    per_sequence: bool = False
    read_states: list[torch.Tensor] = field(default_factory=list)


@dataclass
class MetaEmbedModelOutput(ModelOutput):
    """Output of `MetaEmbedModel`.

    Args:
        last_hidden_state: `(segments, units, dim)` fused (and head-refined) unit states; padded units are zero.
        pooler_output: `(samples, pooled_dim)` one vector per sample, after the pair architecture.
        fusion_weights: `(segments, units, backbones)` how much each unit relied on each backbone
            (`(segments, backbones)` at `level="sequence"`).
        unit_mask: `(segments, units)` 1 for real units.
        backbone_states: per backbone, `(segments, units, d_i)` aligned states before fusion (when requested).
        layer_weights: per backbone whose layers are weighed by learned weights (`"mix"`, `"attention"`), how much
            each unit took from each layer, `(segments, units, layers)`; None for the other backbones (with
            `output_layer_weights=True`, at `level="unit"`).
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    fusion_weights: torch.FloatTensor | None = None
    unit_mask: torch.LongTensor | None = None
    backbone_states: tuple[torch.FloatTensor, ...] | None = None
    layer_weights: tuple[torch.FloatTensor | None, ...] | None = None


@dataclass
class MetaEmbedSequenceClassifierOutput(ModelOutput):
    """Output of `MetaEmbedForSequenceClassification`: `logits (samples, num_labels)`, `loss` when labels are given,
    and the `fusion_weights`/`pooler_output` of the base model."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    fusion_weights: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    unit_mask: torch.LongTensor | None = None


@dataclass
class MetaEmbedTokenClassifierOutput(ModelOutput):
    """Output of `MetaEmbedForTokenClassification`: per-unit `logits (segments, units, num_labels)`, `loss` when
    labels `(segments, units)` are given (-100 ignored), and the per-unit `fusion_weights`."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    fusion_weights: torch.FloatTensor | None = None
    unit_mask: torch.LongTensor | None = None
