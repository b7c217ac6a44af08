"""Task heads: the layers that turn a pooled (or per-unit) state into logits.

`linear` and `mlp` map vectors to logits. A head may also refine the fused unit states before pooling
(`unit_encoder`, e.g. ConvBERT): heads that do set `build_unit_encoder`.
"""

import torch
from torch import nn

from .registry import Registry

HEADS = Registry("head")


def list_heads() -> list[str]:
    """Names accepted by `MetaEmbedConfig(head=...)`."""
    return HEADS.names()


@HEADS.register("linear")
class LinearHead(nn.Module):
    """Dropout then one linear layer: `(..., input_dim) -> (..., num_labels)`."""

    def __init__(self, config, input_dim: int, num_labels: int) -> None:
        super().__init__()
        self.dropout = nn.Dropout(config.head_dropout)
        self.out_proj = nn.Linear(input_dim, num_labels)

    @staticmethod
    def build_unit_encoder(config, dim: int) -> nn.Module | None:
        """No unit-level refinement for plain heads."""
        return None

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(states))


@HEADS.register("mlp")
class MLPHead(LinearHead):
    """Linear -> GELU -> dropout -> linear; hidden size `head_hidden_size` (defaults to the input size)."""

    def __init__(self, config, input_dim: int, num_labels: int) -> None:
        hidden = config.head_hidden_size or input_dim
        super().__init__(config, hidden, num_labels)
        self.dense = nn.Linear(input_dim, hidden)
        self.activation = nn.GELU()

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(self.activation(self.dense(states))))


def build_head(config, input_dim: int, num_labels: int) -> nn.Module:
    """Instantiate the head named by `config.head`."""
    return HEADS.get_class(config.head)(config, input_dim, num_labels)


def build_unit_encoder(config, dim: int) -> nn.Module | None:
    """The unit-level encoder of the configured head, or None if it has none."""
    return HEADS.get_class(config.head).build_unit_encoder(config, dim)
