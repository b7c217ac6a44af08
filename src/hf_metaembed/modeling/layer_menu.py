"""The layer menu of the reading stage: which layers of a backbone its states come from, and how several combine.

Per backbone (`backbone_layers`): one layer (`"last"` or an index), a list of layers combined without weights
(`layer_combine`: their `"mean"` or `"concat"`), `"mix"` (a learned scalar mix, optionally over layer-normalised
layers) or `"attention"` (each unit weighs the layers itself). The reader selects the layers (`select_layer`) and
owns one combiner per backbone that needs one (`layer_combiner`).

Model code (copied next to a saved model for `trust_remote_code`): imports torch, transformers and its siblings.
"""

import torch
from torch import nn
from transformers import initialization as init


class ScalarMix(nn.Module):
    """Learned softmax-weighted sum of a backbone's layers, times a learned scale (ELMo's scalar mix):
    gamma sum_l softmax(s)_l h_l, each h_l layer-normalised per unit first when `layer_norm` (no affine weights)."""

    learned = True

    def __init__(self, num_layers: int, layer_norm: bool = False) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.layer_norm = layer_norm
        self.layer_scores = nn.Parameter(torch.zeros(num_layers))
        self.scale = nn.Parameter(torch.ones(()))

    def init_block_weights(self) -> None:
        """Equal layer weights and unit scale (skipped for weights a checkpoint loaded)."""
        init.zeros_(self.layer_scores)
        init.ones_(self.scale)

    def forward(self, layers: torch.Tensor) -> torch.Tensor:
        # layers: (..., num_layers, dim) -> (..., dim)
        if self.layer_norm:
            layers = nn.functional.layer_norm(layers, layers.shape[-1:])
        weights = torch.softmax(self.layer_scores, dim=0).to(layers.dtype)
        return self.scale * torch.einsum("l,...ld->...d", weights, layers)


class LayerAttention(nn.Module):
    """Per-unit attention over a backbone's layers: a_l = softmax_l(w . h_l + b) at each unit (one scorer shared by
    the layers), out = sum_l a_l h_l; each residue or word weighs the layers itself."""

    learned = True

    def __init__(self, num_layers: int, dim: int) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.score = nn.Linear(dim, 1)

    def layer_weights(self, layers: torch.Tensor) -> torch.Tensor:
        """`(..., num_layers, dim)` -> the weights `(..., num_layers)`."""
        return torch.softmax(self.score(layers).squeeze(-1), dim=-1)

    def forward(self, layers: torch.Tensor) -> torch.Tensor:
        return torch.einsum("...l,...ld->...d", self.layer_weights(layers), layers)


class LayerCombine(nn.Module):
    """A fixed list of layers combined without weights: their mean, or their concatenation (`layer_combine`)."""

    learned = False

    def __init__(self, num_layers: int, combine: str) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.combine = combine

    def forward(self, layers: torch.Tensor) -> torch.Tensor:
        return layers.mean(dim=-2) if self.combine == "mean" else layers.flatten(-2)


def select_layer(outputs, layer: str | int | list[int]) -> torch.Tensor:
    """Token states of the chosen layer; for `"mix"` and `"attention"` all layers, for a list those layers, stacked
    as `(batch, tokens, layers, dim)`."""
    if layer == "last":
        return outputs.last_hidden_state
    hidden_states = outputs.hidden_states
    if layer in ("mix", "attention"):
        return torch.stack(hidden_states, dim=2)
    for index in layer if isinstance(layer, list | tuple) else [layer]:
        if not -len(hidden_states) <= index < len(hidden_states):
            raise ValueError(f"layer {index} is out of range: this backbone has {len(hidden_states)} hidden states")
    if isinstance(layer, list | tuple):
        return torch.stack([hidden_states[index] for index in layer], dim=2)
    return hidden_states[layer]


def layer_combiner(config, index: int, num_layers: int) -> nn.Module | None:
    """The module that combines backbone `index`'s layers (None when it reads one layer)."""
    layer = config.backbone_layers[index]
    if layer == "mix":
        return ScalarMix(num_layers, config.layer_mix_norm)
    if layer == "attention":
        return LayerAttention(num_layers, config.backbone_hidden_sizes[index])
    if isinstance(layer, list | tuple):
        return LayerCombine(len(layer), config.layer_combine)
    return None
