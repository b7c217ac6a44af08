"""Fusion strategies: combine the states of n backbones at each unit (residue or word) into one state.

Every fusion maps a list of backbone states `[(batch, units, d_i)]` and `unit_mask (batch, units)` to
`(fused (batch, units, output_dim), fusion_weights (batch, units, n))`: the weights say how much each unit relied on
each backbone. Padded units come out as zeros with zero weights.

Adding a strategy: one class decorated with `@FUSIONS.register("name")`, taking `(config, input_dims)`, declaring its
settings, validation and card text as every `Block` does (registry.py); it can live in the user's own module.
"""

import torch
from torch import nn
from transformers import initialization as init

from .registry import Block, check_choice, check_heads, new_registry

FUSIONS = new_registry("fusion", "fusion")
# facebookresearch/DME's `nn_init` draws every bias from U(-1e-4, 1e-4)
REFERENCE_BIAS_BOUND = 1e-4


def list_fusions() -> list[str]:
    """Names accepted by `MetaEmbedConfig(fusion=...)`."""
    return FUSIONS.names()


class Fusion(Block, nn.Module):
    """Base class. Subclasses define `fuse(states, unit_mask) -> (fused, weights)` and, when their output is not the
    common size, `output_size`."""

    def __init__(self, config, input_dims: list[int]) -> None:
        super().__init__()
        self.input_dims = list(input_dims)
        self.dim = common_size(config, input_dims)
        self.output_dim = self.output_size(config, input_dims)

    @classmethod
    def output_size(cls, config, input_dims: list[int]) -> int:
        """Size of the fused unit state, known before any layer is built (so settings can be checked against it)."""
        return common_size(config, input_dims)

    def forward(self, states: list[torch.Tensor], unit_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(states) != len(self.input_dims):
            raise ValueError(f"fusion expects states from {len(self.input_dims)} backbones, got {len(states)}")
        fused, weights = self.fuse(states, unit_mask)
        real = unit_mask.unsqueeze(-1).to(fused.dtype)
        return fused * real, weights * real


def unit_size(config, dims: list[int]) -> int:
    """Size of the fused unit states the unit encoder and pair architecture read (known before any layer exists)."""
    return FUSIONS.get_class(config.fusion).output_size(config, dims)


def common_size(config, input_dims: list[int]) -> int:
    """The size every backbone is projected to: `fusion_dim`, or the smallest backbone hidden size."""
    return config.fusion_dim or (min(input_dims) if input_dims else None)


def reference_init(module: nn.Module, method: str) -> None:
    """Initialise `module`'s own parameters as facebookresearch/DME's `nn_init` does: every weight Xavier-uniform
    (`"xavier"`) or orthogonal (`"orthogonal"`), every bias from U(-1e-4, 1e-4). Skips weights a checkpoint loaded."""
    for name, parameter in module.named_parameters(recurse=False):
        if "weight" in name:
            (init.xavier_uniform_ if method == "xavier" else init.orthogonal_)(parameter)
        elif "bias" in name:
            init.uniform_(parameter, -REFERENCE_BIAS_BOUND, REFERENCE_BIAS_BOUND)


class ProjectedFusion(Fusion):
    """Shared part of the fusions that project every backbone to the common dim: p_i = P_i h_i + b_i, then
    `fusion_activation` (ReLU by default, as facebookresearch/DME applies after combining) and dropout on the fused
    state. Configs saved by release 0.1, which had no activation, keep none (`legacy_config`); a saved config
    always stores its own value."""

    config_fields = {"fusion_activation": "relu", "fusion_dropout": 0.0}
    legacy_config = {"fusion_activation": None}

    @classmethod
    def check_config(cls, config, dims: list[int]) -> None:
        check_choice(config.fusion_activation, (None, "relu"), "fusion_activation")

    def __init__(self, config, input_dims: list[int]) -> None:
        super().__init__(config, input_dims)
        self.projections = nn.ModuleList(nn.Linear(d, self.dim) for d in input_dims)
        self.activation = nn.ReLU() if config.fusion_activation == "relu" else nn.Identity()
        self.dropout = nn.Dropout(config.fusion_dropout)

    def init_projections(self) -> None:
        """facebookresearch/DME's initialisation of the projections (`nn_init(..., 'xavier')`): Xavier-uniform
        weights, biases from U(-1e-4, 1e-4)."""
        for projection in self.projections:
            reference_init(projection, "xavier")

    def project(self, states: list[torch.Tensor]) -> torch.Tensor:
        # (batch, units, backbones, dim)
        return torch.stack([proj(h) for proj, h in zip(self.projections, states)], dim=2)

    def finish(self, fused: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.activation(fused))


@FUSIONS.register("concat")
class ConcatFusion(Fusion):
    """[h_1; ...; h_n]: the baseline. It weighs nothing, so it reports uniform weights 1/n."""

    card_text = "Fusion concatenates the backbones' states (the baseline meta-embedding)."

    @classmethod
    def output_size(cls, config, input_dims: list[int]) -> int:
        return sum(input_dims)

    def fuse(self, states, unit_mask):
        fused = torch.cat(states, dim=-1)
        weights = fused.new_full((*fused.shape[:2], len(states)), 1.0 / len(states))
        return fused, weights


@FUSIONS.register("mean")
class MeanFusion(ProjectedFusion):
    """Mean of the projected states, (1/n) sum_i (P_i h_i + b_i): the projected baseline of Dynamic Meta-Embeddings
    (Kiela, Wang and Cho, EMNLP 2018; the reference sums, which differs only by the factor n). Weights are uniform
    1/n. The unprojected average of normalised sources (Coates & Bollegala 2018) is the `average` fusion."""

    card_text = (
        "Fusion projects each backbone's state to a common size and averages the projections (the projected "
        "baseline of Kiela, Wang and Cho, *Dynamic Meta-Embeddings for Improved Sentence Representations*, "
        "EMNLP 2018)."
    )

    def init_block_weights(self) -> None:
        self.init_projections()

    def fuse(self, states, unit_mask):
        projected = self.project(states)
        weights = projected.new_full(projected.shape[:3], 1.0 / len(states))
        return self.finish(projected.mean(dim=2)), weights


@FUSIONS.register("dme")
class DynamicMetaEmbedding(ProjectedFusion):
    """Dynamic meta-embeddings: s_i = a . p_i + c, alpha = softmax_i(s) (or a sigmoid per backbone),
    out = ReLU(sum_i alpha_i p_i) (`fusion_activation`), then dropout."""

    config_fields = {**ProjectedFusion.config_fields, "gating": "softmax"}
    card_text = (
        "Dynamic meta-embeddings project each backbone's state to a common size and mix them with learned, "
        "per-unit weights (Kiela, Wang and Cho, *Dynamic Meta-Embeddings for Improved Sentence Representations*, "
        "EMNLP 2018)."
    )

    @classmethod
    def check_config(cls, config, dims: list[int]) -> None:
        super().check_config(config, dims)
        check_choice(config.gating, ("softmax", "sigmoid"), "gating")

    def __init__(self, config, input_dims: list[int]) -> None:
        super().__init__(config, input_dims)
        self.gating = config.gating
        self.scorer = self.build_scorer(config)

    def build_scorer(self, config) -> nn.Module:
        return nn.Linear(self.dim, 1)

    def init_block_weights(self) -> None:
        """DME's initialisation: projections as `init_projections`; the reference scores with two linear layers
        (d -> 2 -> 1, each Xavier-uniform with U(-1e-4, 1e-4) biases, no non-linearity between), which is one linear
        map, so the score layer starts as their product: w = W_1 W_0, b = W_1 b_0 + b_1 (docs/PAPER.md)."""
        self.init_projections()
        if not isinstance(self.scorer, nn.Linear):
            return  # cdme's BiLSTM scorer initialises itself
        weight = self.scorer.weight
        # the two reference layers' weights and biases, drawn in the reference's order
        first, first_bias = weight.new_empty(2, self.dim), weight.new_empty(2)
        second, second_bias = weight.new_empty(1, 2), weight.new_empty(1)
        for matrix, bias in ((first, first_bias), (second, second_bias)):
            init.xavier_uniform_(matrix)
            init.uniform_(bias, -REFERENCE_BIAS_BOUND, REFERENCE_BIAS_BOUND)
        with torch.no_grad():
            init.copy_(weight, second @ first)
            init.copy_(self.scorer.bias, second @ first_bias + second_bias)

    def scores(self, projected: torch.Tensor, unit_mask: torch.Tensor) -> torch.Tensor:
        # (batch, units, backbones)
        return self.scorer(projected).squeeze(-1)

    def fuse(self, states, unit_mask):
        projected = self.project(states)
        scores = self.scores(projected, unit_mask)
        weights = torch.sigmoid(scores) if self.gating == "sigmoid" else torch.softmax(scores, dim=-1)
        fused = torch.einsum("bun,bund->bud", weights, projected)
        return self.finish(fused), weights


class _BiLSTMScorer(nn.Module):
    """Reads each backbone's projected sequence with a small BiLSTM (padding packed away), then a linear score."""

    def __init__(self, dim: int, hidden_size: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, hidden_size, batch_first=True, bidirectional=True)
        self.linear = nn.Linear(2 * hidden_size, 1)

    def init_block_weights(self) -> None:
        """CDME's initialisation in facebookresearch/DME: the BiLSTM's weights orthogonal, the score layer
        Xavier-uniform, every bias from U(-1e-4, 1e-4)."""
        reference_init(self.lstm, "orthogonal")
        reference_init(self.linear, "xavier")

    def forward(self, projected: torch.Tensor, unit_mask: torch.Tensor) -> torch.Tensor:
        batch, units, backbones, dim = projected.shape
        # one sequence per (sample, backbone): keep the time axis intact, only fold backbones into the batch
        sequences = projected.permute(0, 2, 1, 3).reshape(batch * backbones, units, dim)
        lengths = unit_mask.sum(dim=1).clamp(min=1).repeat_interleave(backbones).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(sequences, lengths, batch_first=True, enforce_sorted=False)
        read, _ = self.lstm(packed)
        read, _ = nn.utils.rnn.pad_packed_sequence(read, batch_first=True, total_length=units)
        scores = self.linear(read).squeeze(-1)  # (batch * backbones, units)
        return scores.reshape(batch, backbones, units).permute(0, 2, 1)


@FUSIONS.register("cdme")
class ContextualDynamicMetaEmbedding(DynamicMetaEmbedding):
    """Contextual DME: the score of each backbone at a unit is read from a BiLSTM over that backbone's sequence."""

    config_fields = {**DynamicMetaEmbedding.config_fields, "cdme_hidden_size": 2}
    card_text = (
        "Contextualized dynamic meta-embeddings project each backbone's state to a common size and mix them with "
        "weights read from a small BiLSTM over the sequence (Kiela, Wang and Cho, EMNLP 2018)."
    )

    def build_scorer(self, config) -> nn.Module:
        return _BiLSTMScorer(self.dim, config.cdme_hidden_size)

    def scores(self, projected, unit_mask):
        return self.scorer(projected, unit_mask)


@FUSIONS.register("attention")
class AttentionFusion(ProjectedFusion):
    """At each unit the n projected backbone states attend to each other (one multi-head layer with a residual),
    then a learned softmax score pools them; the pooling weights are reported as the fusion weights."""

    config_fields = {**ProjectedFusion.config_fields, "fusion_num_heads": 1}
    card_text = (
        "At each unit the projected backbone states attend to each other in one small multi-head layer and are "
        "pooled with reported weights."
    )

    @classmethod
    def check_config(cls, config, dims: list[int]) -> None:
        super().check_config(config, dims)
        check_heads("fusion_num_heads", config.fusion_num_heads, common_size(config, dims), "fusion size (fusion_dim)")

    def __init__(self, config, input_dims: list[int]) -> None:
        super().__init__(config, input_dims)
        self.attention = nn.MultiheadAttention(self.dim, config.fusion_num_heads, batch_first=True)
        self.norm = nn.LayerNorm(self.dim)
        self.scorer = nn.Linear(self.dim, 1)

    def fuse(self, states, unit_mask):
        projected = self.project(states)
        batch, units, backbones, dim = projected.shape
        per_unit = projected.reshape(batch * units, backbones, dim)
        attended, _ = self.attention(per_unit, per_unit, per_unit, need_weights=False)
        attended = self.norm(per_unit + attended).reshape(batch, units, backbones, dim)
        weights = torch.softmax(self.scorer(attended).squeeze(-1), dim=-1)
        fused = torch.einsum("bun,bund->bud", weights, attended)
        return self.finish(fused), weights


def build_fusion(config, input_dims: list[int]) -> Fusion:
    """Instantiate the fusion named by `config.fusion` for backbones of the given dims."""
    return FUSIONS.get_class(config.fusion)(config, input_dims)
