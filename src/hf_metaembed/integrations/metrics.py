"""Regression metrics for binding-affinity models, and the conversion of dissociation constants to pKd.

Not model code (never copied next to a saved model); uses numpy only, not scipy.
"""

from collections.abc import Sequence

import numpy as np

# molar value of one unit of each accepted dissociation-constant unit
KD_UNITS = {"M": 1.0, "mM": 1e-3, "uM": 1e-6, "µM": 1e-6, "μM": 1e-6, "nM": 1e-9, "pM": 1e-12, "fM": 1e-15}


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


def _as_columns(array, name: str) -> np.ndarray:
    array = np.asarray(array.detach().cpu() if hasattr(array, "detach") else array, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"{name} must be (samples,) or (samples, targets); got shape {array.shape}")
    return array


def compute_metrics(eval_pred) -> dict[str, float]:
    """`compute_metrics` for a regression `Trainer`: Spearman, Pearson and RMSE of predictions against labels.

    Args:
        eval_pred: an `EvalPrediction` (or a `(predictions, labels)` pair) with predictions `(samples,)` or
            `(samples, targets)` (a tuple of model outputs is read from its first element, the logits) and labels
            of the same shape.

    Returns:
        `{"spearman", "pearson", "rmse"}`; with several targets, each metric is the mean over targets and per-target
        values are added as `spearman_0`, `pearson_0`, `rmse_0`, ...
    """
    predictions, labels = eval_pred[0], eval_pred[1]
    if isinstance(predictions, (tuple, list)) and predictions and not np.isscalar(predictions[0]):
        predictions = predictions[0]
    predictions, labels = _as_columns(predictions, "predictions"), _as_columns(labels, "labels")
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions have shape {predictions.shape} but labels {labels.shape}")
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
    return results


def kd_to_pkd(kd: float | Sequence[float] | np.ndarray, unit: str = "M") -> float | np.ndarray:
    """pKd = -log10(KD in molar), with no capping (1 fM gives 15, 1 mM gives 3).

    Args:
        kd: one dissociation constant or an array of them (any shape; torch tensors are accepted too).
        unit: unit of `kd`: one of M, mM, uM (or µM), nM, pM, fM.

    Returns:
        A float for a scalar input, else a float64 array of the same shape.

    Raises:
        ValueError: on an unknown unit, or a KD that is zero, negative or not finite (naming its index).
    """
    if unit not in KD_UNITS:
        raise ValueError(f"unknown KD unit {unit!r}; choose one of: {', '.join(KD_UNITS)}")
    scalar = np.ndim(kd.detach().cpu() if hasattr(kd, "detach") else kd) == 0
    values = np.asarray(kd.detach().cpu() if hasattr(kd, "detach") else kd, dtype=np.float64)
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0]) if values.ndim else ()
        where = "" if scalar else f" at index {index[0] if len(index) == 1 else index}"
        raise ValueError(
            f"KD{where} is {float(values[index])!r} {unit}: a dissociation constant must be a "
            "positive finite number; drop or fix that measurement"
        )
    pkd = -np.log10(values) - np.log10(KD_UNITS[unit])
    return float(pkd) if scalar else pkd


__all__ = ["compute_metrics", "kd_to_pkd", "pearson", "rmse", "spearman"]
