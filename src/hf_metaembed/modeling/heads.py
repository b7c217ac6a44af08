"""Task heads: the layers that turn a pooled (or per-unit) state into logits.

Every head maps `(..., input_dim)` to `(..., num_labels)`. Unit-level refinement (ConvBERT) is its own stage
(unit_encoders.py), selected by `unit_encoder`; `head="convbert"` is kept as a name for release 0.1's spelling of
`head="linear", unit_encoder="convbert"`.

Adding a head: one class decorated with `@HEADS.register("name")`, taking `(config, input_dim, num_labels)`.
"""

import torch
from torch import nn

from .registry import Block, new_registry

HEADS = new_registry("head", "head")


def list_heads() -> list[str]:
    """Names accepted by `MetaEmbedConfig(head=...)`."""
    return HEADS.names()


@HEADS.register("linear")
class LinearHead(Block, nn.Module):
    """Dropout then one linear layer: `(..., input_dim) -> (..., num_labels)`."""

    config_fields = {"head_dropout": 0.1}
    card_text = "a linear layer (after dropout)"

    def __init__(self, config, input_dim: int, num_labels: int) -> None:
        super().__init__()
        self.dropout = nn.Dropout(config.head_dropout)
        self.out_proj = nn.Linear(input_dim, num_labels)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(states))


@HEADS.register("mlp")
class MLPHead(LinearHead):
    """Linear -> GELU -> dropout -> linear; hidden size `head_hidden_size` (defaults to the input size)."""

    config_fields = {**LinearHead.config_fields, "head_hidden_size": None}
    card_text = "Linear - GELU - dropout - Linear"

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
