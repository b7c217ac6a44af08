"""Regression metrics of binding-affinity models: Spearman (with a bootstrap interval), Pearson and RMSE, in numpy."""

import numpy as np

from .arrays import predictions_and_labels, to_numpy


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks starting at 1, ties given the mean of the ranks they span (as Spearman's rho needs)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    # start of each run of equal values, and the run each sorted position belongs to
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    run = np.cumsum(np.r_[True, sorted_values[1:] != sorted_values[:-1]]) - 1
    ends = np.r_[starts[1:], len(values)]
    mean_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = mean_rank[run]
    return ranks


def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Pearson correlation of two 1-D arrays; NaN when either is constant (the correlation is undefined)."""
    x = np.asarray(predictions, dtype=np.float64) - np.mean(predictions)
    y = np.asarray(labels, dtype=np.float64) - np.mean(labels)
    denominator = np.sqrt(np.sum(x * x) * np.sum(y * y))
    if denominator == 0.0:
        return float("nan")
    return float(np.clip(np.sum(x * y) / denominator, -1.0, 1.0))


def spearman(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Spearman rank correlation (Pearson correlation of tie-averaged ranks); NaN when either is constant."""
    return pearson(_ranks(np.asarray(predictions)), _ranks(np.asarray(labels)))


def rmse(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Root mean squared error."""
    difference = np.asarray(predictions, dtype=np.float64) - np.asarray(labels, dtype=np.float64)
    return float(np.sqrt(np.mean(difference * difference)))


def _bootstrap_ranks(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Tie-averaged ranks of every sample inside each bootstrap resample, without materialising the resamples.

    Args:
        values: `(samples,)` the original values.
        counts: `(resamples, samples)` how many times each sample was drawn into each resample.

    Returns:
        `(resamples, samples)` the rank a copy of sample k has in resample b (ties, including repeated draws of one
        sample, share the mean of the ranks they span, as in `_ranks`).
    """
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    new_group = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    starts = np.flatnonzero(new_group)
    group_of_sorted = np.cumsum(new_group) - 1
    group_of = np.empty(len(values), dtype=np.int64)
    group_of[order] = group_of_sorted
    drawn_per_group = np.add.reduceat(counts[:, order], starts, axis=1)  # (resamples, groups)
    drawn_below = np.cumsum(drawn_per_group, axis=1) - drawn_per_group
    return (drawn_below + (drawn_per_group + 1) / 2.0)[:, group_of]


def _bootstrap_spearman(predictions: np.ndarray, labels: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Spearman's rho of each bootstrap resample, the mean over targets when there are several.

    Args:
        predictions, labels: `(samples, targets)`.
        draws: `(resamples, samples)` indices of the samples drawn into each resample.

    Returns:
        `(resamples,)`; NaN where a resample is constant on either side (rho is undefined there).
    """
    resamples, samples = draws.shape
    flat = (np.arange(resamples)[:, None] * samples + draws).ravel()
    counts = np.bincount(flat, minlength=resamples * samples).reshape(resamples, samples).astype(np.float64)
    rhos = []
    for target in range(labels.shape[1]):
        prediction_ranks = _bootstrap_ranks(predictions[:, target], counts)
        label_ranks = _bootstrap_ranks(labels[:, target], counts)
        # Pearson correlation of the ranks, each sample weighted by how often it was drawn
        x = prediction_ranks - (counts * prediction_ranks).sum(axis=1, keepdims=True) / samples
        y = label_ranks - (counts * label_ranks).sum(axis=1, keepdims=True) / samples
        denominator = np.sqrt((counts * x * x).sum(axis=1) * (counts * y * y).sum(axis=1))
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = np.where(denominator > 0, (counts * x * y).sum(axis=1) / denominator, np.nan)
        rhos.append(np.clip(rho, -1.0, 1.0))
    return np.mean(rhos, axis=0)


def _spearman_interval(
    predictions: np.ndarray, labels: np.ndarray, n_boot: int, alpha: float, seed: int
) -> tuple[float, float]:
    samples = labels.shape[0]
    rng = np.random.default_rng(seed)
    rhos = []
    # resamples in blocks so memory stays near 2 million entries whatever the number of samples
    block = max(1, 2_000_000 // samples)
    for start in range(0, n_boot, block):
        draws = rng.integers(0, samples, size=(min(block, n_boot - start), samples))
        rhos.append(_bootstrap_spearman(predictions, labels, draws))
    rhos = np.concatenate(rhos)
    rhos = rhos[np.isfinite(rhos)]
    if len(rhos) < n_boot / 2:  # rho undefined on most resamples (e.g. constant predictions): no interval
        return float("nan"), float("nan")
    low, high = np.quantile(rhos, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def spearman_ci(predictions, labels, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval for Spearman's rho.

    Draws `n_boot` resamples of the (prediction, label) pairs with replacement, computes rho on each (tie-averaged
    ranks, as `spearman`) and returns the `alpha / 2` and `1 - alpha / 2` quantiles of those values. Resamples where
    either side is constant are left out; if that is more than half of them (e.g. constant predictions), or rho is
    undefined, the interval is `(nan, nan)`. The same `seed` gives the same interval.

    The study's reference code (Proteinea/ppiseq, `ppiseq/metrics.py`) reports an analytic error bar instead,
    `sqrt((1 - rho**2)**2 * (1 + rho**2 / 2) / (n - 3))`; the bootstrap makes no normality assumption.

    Args:
        predictions: `(samples,)` or `(samples, targets)`; torch tensors are accepted.
        labels: the same shape. With several targets the interval is that of the mean rho over targets (the
            `spearman` of `compute_metrics`).
        n_boot: number of bootstrap resamples (at least 1).
        alpha: 1 - confidence level (0.05 gives a 95% interval).
        seed: seed of the resampling.

    Returns:
        `(low, high)` floats.
    """
    predictions, labels = _as_columns(predictions, "predictions"), _as_columns(labels, "labels")
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions have shape {predictions.shape} but labels {labels.shape}")
    if predictions.shape[0] < 2:
        raise ValueError(f"a Spearman interval needs at least 2 samples, got {predictions.shape[0]}")
    if not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot is {n_boot!r}; pass a positive number of bootstrap resamples such as 1000")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha is {alpha!r}; pass a number between 0 and 1 (0.05 gives a 95% interval)")
    return _spearman_interval(predictions, labels, n_boot, alpha, seed)


def _as_columns(array, name: str) -> np.ndarray:
    array = to_numpy(array, np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"{name} must be (samples,) or (samples, targets); got shape {array.shape}")
    return array


def regression_metrics(eval_pred) -> dict[str, float]:
    """`compute_metrics` for a regression `Trainer`: Spearman, Pearson and RMSE of predictions against labels.

    Args:
        eval_pred: an `EvalPrediction` (or a `(predictions, labels)` pair) with predictions `(samples,)` or
            `(samples, targets)` (a tuple of model outputs is read from its first element, the logits) and labels
            of the same shape.

    Returns:
        `{"spearman", "pearson", "rmse", "spearman_ci_low", "spearman_ci_high"}`, the last two a 95% bootstrap
        interval for Spearman (`spearman_ci` with its defaults: 1000 resamples, seed 0); with several targets, each
        metric is the mean over targets and per-target values are added as `spearman_0`, `pearson_0`, `rmse_0`, ...
    """
    predictions, labels = predictions_and_labels(eval_pred)
    predictions, labels = _as_columns(predictions, "predictions"), _as_columns(labels, "labels")
    if predictions.shape != labels.shape:
        hint = ""
        if predictions.shape[1] > 1 and labels.shape[1] == 1:
            hint = (
                "; class scores against class ids are scored by classification_metrics (compute_metrics picks it "
                "when the labels are whole numbers)"
            )
        raise ValueError(f"predictions have shape {predictions.shape} but labels {labels.shape}{hint}")
    if predictions.shape[0] < 2:
        raise ValueError(f"correlations need at least 2 samples, got {predictions.shape[0]}")
    for name, array in (("labels", labels), ("predictions", predictions)):
        bad = ~np.isfinite(array).all(axis=1)
        if bad.any():
            raise ValueError(f"{name} of samples {np.flatnonzero(bad)[:10].tolist()} are NaN or infinite")
    per_target = {
        metric: [function(predictions[:, j], labels[:, j]) for j in range(labels.shape[1])]
        for metric, function in (("spearman", spearman), ("pearson", pearson), ("rmse", rmse))
    }
    results = {metric: float(np.mean(values)) for metric, values in per_target.items()}
    if labels.shape[1] > 1:
        for metric, values in per_target.items():
            results.update({f"{metric}_{j}": value for j, value in enumerate(values)})
    results["spearman_ci_low"], results["spearman_ci_high"] = _spearman_interval(
        predictions, labels, n_boot=1000, alpha=0.05, seed=0
    )
    return results
