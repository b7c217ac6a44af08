"""The statistics of a comparison: metrics per task, a percentile-bootstrap interval over test items, and a paired
test of two cells on the same test items.

Every function takes per-seed predictions of one cell, `(seeds, items)` for regression or `(seeds, items, classes)`
class scores for classification, and the `(items,)` labels; a cell's value is the mean over seeds of the metric
computed on all its test items. Resampling draws test items (the same draw for every seed, and for both cells of a
paired test), so the interval says how much the value would move on another test set of the same size; the spread
over seeds (training noise) is reported beside it.

- `bootstrap_interval`: the `alpha / 2` and `1 - alpha / 2` quantiles of the cell's value over `resamples` bootstrap
  draws of the test items (resamples where the metric is undefined, e.g. AUROC of a one-class draw, are left out).
- `paired_test`: the effect is `value(a) - value(b)`; its interval is the paired bootstrap (both cells scored on the
  same draw); the two-sided p-value is the approximate-randomisation (permutation) test: under the null hypothesis
  the two cells' predictions of an item are exchangeable, so each item's predictions are swapped between the cells
  with probability 1/2 and `p = (1 + #{|effect*| >= |effect|}) / (1 + permutations)`; with at most
  `permutations` possible swaps (2 ** items) every swap pattern is enumerated and the p-value is exact.

Accuracy, macro-F1 and RMSE come from `hf_metaembed.integrations.metrics`, as do Spearman and Pearson; MCC and
AUROC are defined here. Uses numpy only.
"""

from collections.abc import Callable
from dataclasses import dataclass
from itertools import product

import numpy as np

from ..integrations.metrics import classification_metrics, pearson, rmse, spearman
from ..integrations.metrics.regression import _ranks

CLASSIFICATION_METRICS = ("accuracy", "f1_macro", "mcc", "auroc")
REGRESSION_METRICS = ("spearman", "pearson", "rmse")
# metrics where a smaller value is better; every other one is better when larger
LOWER_IS_BETTER = frozenset({"rmse"})
DEFAULT_METRIC = {"classification": "accuracy", "regression": "spearman"}


def matthews_correlation(scores: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation coefficient of the arg-max class against `labels` (Gorodkin's multi-class form):
    `(c * s - sum_k p_k t_k) / sqrt((s**2 - sum_k p_k**2) (s**2 - sum_k t_k**2))` with `c` correct predictions,
    `s` items, `p_k` and `t_k` how often class k is predicted and true. 0 when either side holds one class only.

    Args:
        scores: `(items, classes)` class scores; labels: `(items,)` class ids.
    """
    predicted = np.asarray(scores).argmax(axis=-1)
    labels = np.asarray(labels).astype(np.int64)
    classes = max(int(predicted.max()), int(labels.max())) + 1
    predicted_counts = np.bincount(predicted, minlength=classes).astype(np.float64)
    true_counts = np.bincount(labels, minlength=classes).astype(np.float64)
    items = float(len(labels))
    correct = float(np.sum(predicted == labels))
    denominator = np.sqrt((items**2 - predicted_counts @ predicted_counts) * (items**2 - true_counts @ true_counts))
    if denominator == 0.0:
        return 0.0
    return float((correct * items - predicted_counts @ true_counts) / denominator)


def _binary_auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for the items where `positive` is True (the Mann-Whitney statistic,
    ties counted half); NaN when one side is empty."""
    positives = int(positive.sum())
    negatives = len(positive) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = _ranks(scores)
    return float((ranks[positive].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: for two classes, of the score margin of class 1 over class 0; for more, the mean of
    each class's one-vs-rest AUROC over the classes present (softmax probabilities). NaN with one class only.

    Args:
        scores: `(items, classes)` class scores (logits); labels: `(items,)` class ids.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    if scores.shape[1] == 2:
        return _binary_auroc(scores[:, 1] - scores[:, 0], labels == 1)
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    per_class = [_binary_auroc(probabilities[:, c], labels == c) for c in np.unique(labels)]
    per_class = [value for value in per_class if np.isfinite(value)]
    return float(np.mean(per_class)) if per_class else float("nan")


def _accuracy(scores, labels) -> float:
    # what `classification_metrics` reports as accuracy, without its other metrics: called for every resample
    return float(np.mean(np.asarray(scores).argmax(axis=-1) == np.asarray(labels)))


def _f1_macro(scores, labels) -> float:
    return classification_metrics((scores, labels))["f1_macro"]


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": _accuracy,
    "f1_macro": _f1_macro,
    "mcc": matthews_correlation,
    "auroc": auroc,
    "spearman": spearman,
    "pearson": pearson,
    "rmse": rmse,
}


def task_metrics(task: str) -> tuple[str, ...]:
    """The metrics reported for `task` ("classification" or "regression")."""
    if task not in DEFAULT_METRIC:
        raise ValueError(f"unknown task {task!r}; choose one of: {', '.join(DEFAULT_METRIC)}")
    return CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS


def check_metric(metric: str, task: str) -> str:
    """`metric` if it is reported for `task`, else a `ValueError` listing the ones that are."""
    choices = task_metrics(task)
    if metric not in choices:
        raise ValueError(f"unknown {task} metric {metric!r}; choose one of: {', '.join(choices)}")
    return metric


def cell_value(metric: str, predictions: np.ndarray, labels: np.ndarray, items: np.ndarray | None = None) -> float:
    """The mean over seeds of `metric` on the test items `items` (all when None; repeats allowed, as a bootstrap
    draw has them). `predictions`: `(seeds, items)` or `(seeds, items, classes)`."""
    function = METRICS[metric]
    if items is None:
        values = [function(seed_predictions, labels) for seed_predictions in predictions]
    else:
        values = [function(seed_predictions[items], labels[items]) for seed_predictions in predictions]
    return float(np.mean(values))


def per_seed_values(metric: str, predictions: np.ndarray, labels: np.ndarray) -> list[float]:
    """`metric` of each seed's predictions on all test items."""
    return [float(METRICS[metric](seed_predictions, labels)) for seed_predictions in predictions]


def bootstrap_draws(items: int, resamples: int, seed: int) -> np.ndarray:
    """`(resamples, items)` indices of test items drawn with replacement (the same `seed` gives the same draws)."""
    if resamples < 1:
        raise ValueError(f"resamples is {resamples!r}; pass a positive number such as 1000")
    return np.random.default_rng(seed).integers(0, items, size=(resamples, items))


def _quantiles(values: np.ndarray, alpha: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


@dataclass
class Interval:
    """A cell's value (mean over seeds), its bootstrap interval over test items, and its spread over seeds."""

    value: float
    low: float
    high: float
    seed_std: float
    seed_values: list[float]


def bootstrap_interval(
    metric: str,
    predictions: np.ndarray,
    labels: np.ndarray,
    resamples: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> Interval:
    """The cell's value and its percentile-bootstrap interval over test items (see the module docstring).

    Args:
        metric: a name in `METRICS`.
        predictions: `(seeds, items)` or `(seeds, items, classes)`; labels: `(items,)`.
        resamples: bootstrap draws; alpha: 1 - confidence (0.05: a 95% interval); seed: of the draws.
    """
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    draws = bootstrap_draws(len(labels), resamples, seed)
    values = np.array([cell_value(metric, predictions, labels, draw) for draw in draws])
    low, high = _quantiles(values, alpha)
    seeds = per_seed_values(metric, predictions, labels)
    spread = float(np.std(seeds, ddof=1)) if len(seeds) > 1 else 0.0
    return Interval(float(np.mean(seeds)), low, high, spread, seeds)


@dataclass
class PairedTest:
    """`value(a) - value(b)` on the same test items, its paired-bootstrap interval and permutation p-value."""

    effect: float
    low: float
    high: float
    p_value: float
    permutations: int
    exact: bool


def _swap_patterns(items: int, permutations: int, seed: int) -> tuple[np.ndarray, bool]:
    """`(patterns, items)` booleans, True where an item's predictions are swapped: all 2 ** items patterns when
    that is at most `permutations` (an exact test), else `permutations` random ones."""
    if items <= 20 and 2**items <= permutations:
        return np.array(list(product((False, True), repeat=items)), dtype=bool), True
    return np.random.default_rng(seed).random((permutations, items)) < 0.5, False


def paired_test(
    metric: str,
    predictions_a: np.ndarray,
    predictions_b: np.ndarray,
    labels: np.ndarray,
    resamples: int = 1000,
    permutations: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> PairedTest:
    """Compare cell `a` with cell `b` on the same test items (see the module docstring).

    Args:
        metric: a name in `METRICS`.
        predictions_a, predictions_b: `(seeds, items)` or `(seeds, items, classes)`, the same shape.
        labels: `(items,)`.
        resamples: paired bootstrap draws for the interval; permutations: swap patterns for the p-value (all of
            them, exactly, when there are at most this many).

    Returns:
        A `PairedTest`; for a lower-is-better metric (RMSE) a negative effect means `a` is better.
    """
    a, b, labels = np.asarray(predictions_a), np.asarray(predictions_b), np.asarray(labels)
    if a.shape != b.shape:
        raise ValueError(f"paired cells need predictions of one shape, got {a.shape} and {b.shape}")
    effect = cell_value(metric, a, labels) - cell_value(metric, b, labels)
    draws = bootstrap_draws(len(labels), resamples, seed)
    effects = np.array([cell_value(metric, a, labels, d) - cell_value(metric, b, labels, d) for d in draws])
    low, high = _quantiles(effects, alpha)
    patterns, exact = _swap_patterns(len(labels), permutations, seed + 1)
    extreme = 0
    for swap in patterns:
        # (seeds, items, ...) with the swapped items' predictions exchanged between the cells, for every seed
        mask = swap.reshape((1, -1) + (1,) * (a.ndim - 2))
        permuted = cell_value(metric, np.where(mask, b, a), labels) - cell_value(metric, np.where(mask, a, b), labels)
        extreme += abs(permuted) >= abs(effect) - 1e-12
    if exact:
        p_value = extreme / len(patterns)
    else:
        p_value = (1 + extreme) / (1 + len(patterns))
    return PairedTest(float(effect), low, high, float(p_value), len(patterns), exact)


__all__ = [
    "CLASSIFICATION_METRICS",
    "DEFAULT_METRIC",
    "LOWER_IS_BETTER",
    "METRICS",
    "REGRESSION_METRICS",
    "Interval",
    "PairedTest",
    "auroc",
    "bootstrap_draws",
    "bootstrap_interval",
    "cell_value",
    "check_metric",
    "matthews_correlation",
    "paired_test",
    "per_seed_values",
    "task_metrics",
]
