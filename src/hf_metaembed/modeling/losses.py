"""Regression losses selectable with `MetaEmbedConfig(loss=...)`: `mse` (default), and the study's ranking losses
`list_mle` and `margin_ranking` (Proteinea/ppiseq `layers/losses.py`), which train the order of a batch's predictions
rather than their values (Spearman is what the study reports).

Every loss maps `predictions (samples,)` and `targets (samples,)` to a scalar. Classification losses follow
`problem_type` as in `transformers` and are not listed here.

Adding one: a `Loss` subclass decorated with `@LOSSES.register("name")`.
"""

import torch
from torch import nn

from .registry import Block, new_registry

LOSSES = new_registry("loss", "loss")


def list_losses() -> list[str]:
    """Names accepted by `MetaEmbedConfig(loss=...)` (regression)."""
    return LOSSES.names()


class Loss(Block):
    """Base class: `compute(config, predictions, targets) -> loss`."""


@LOSSES.register("mse")
class MeanSquaredError(Loss):
    """Mean squared error."""

    card_text = "mean squared error"

    @staticmethod
    def compute(config, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(predictions, targets)


@LOSSES.register("list_mle")
class ListMLE(Loss):
    """ListMLE (Xia et al., 2008): the negative log-likelihood of the targets' order under a Plackett-Luce model of the
    predictions. With the samples sorted by target, descending, and s their predictions:
    loss = sum_i (logsumexp(s_i, ..., s_n) - s_i). Summed over the batch, as the reference does; a batch of one
    sample has no order and gives zero."""

    card_text = "ListMLE ranking loss over each batch"

    @staticmethod
    def compute(config, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        ordered = predictions[targets.argsort(descending=True)]
        suffix_logsumexp = ordered.flip(0).logcumsumexp(0).flip(0)
        return (suffix_logsumexp - ordered).sum()


@LOSSES.register("margin_ranking")
class MarginRanking(Loss):
    """Pairwise margin ranking: for every pair (i, j) of the batch with different targets, y = sign(t_i - t_j) and
    loss = mean(max(0, -y (s_i - s_j) + ranking_margin)). Pairs with equal targets are left out (the reference gives
    them y = 0, a constant `margin` that only dilutes the mean); a batch without such a pair gives zero."""

    config_fields = {"ranking_margin": 0.5}
    card_text = "pairwise margin ranking loss over each batch"

    @classmethod
    def check_config(cls, config, dims: list[int]) -> None:
        margin = config.ranking_margin
        if isinstance(margin, bool) or not isinstance(margin, int | float) or margin < 0:
            raise ValueError(f"ranking_margin must be a number >= 0, got {margin!r}")

    @staticmethod
    def compute(config, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        first, second = torch.triu_indices(len(targets), len(targets), offset=1, device=targets.device)
        order = torch.sign(targets[first] - targets[second])
        keep = order != 0
        if not bool(keep.any()):
            return predictions.sum() * 0.0
        return nn.functional.margin_ranking_loss(
            predictions[first[keep]], predictions[second[keep]], order[keep], margin=float(config.ranking_margin)
        )


def regression_loss(config, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The configured regression loss of `predictions (samples,)` against `targets (samples,)`."""
    return LOSSES.get_class(config.loss).compute(config, predictions, targets)
