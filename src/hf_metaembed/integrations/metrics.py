"""`Trainer` metrics (regression metrics for binding-affinity models; accuracy and F1 for classifiers, per sample or
per unit), and the conversion of dissociation constants to pKd.

`compute_metrics` reads the task off the shapes `Trainer` hands it, so one function serves every MetaEmbed head:

    predictions                        labels                         task: metrics
    (samples,) or (samples, targets)   the same shape                 regression: Spearman (+ bootstrap interval),
                                                                      Pearson, RMSE
    (samples, classes), classes >= 2   (samples,) class ids           single-label: accuracy, F1, precision, recall
    (samples, labels)                  (samples, labels) of 0 and 1   multi-label: exact-match accuracy, F1
    (segments, units, classes)         (segments, units), -100 pads   per-unit: as single-label, labelled units only

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
    array = np.asarray(array.detach().cpu() if hasattr(array, "detach") else array, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"{name} must be (samples,) or (samples, targets); got shape {array.shape}")
    return array


def _predictions_and_labels(eval_pred) -> tuple[np.ndarray, np.ndarray]:
    """The predictions (the first model output when there are several, e.g. the logits) and labels as arrays."""
    predictions, labels = eval_pred[0], eval_pred[1]
    if isinstance(predictions, (tuple, list)) and predictions and not np.isscalar(predictions[0]):
        predictions = predictions[0]
    convert = lambda array: np.asarray(array.detach().cpu() if hasattr(array, "detach") else array)  # noqa: E731
    return convert(predictions), convert(labels)


def _is_classification(predictions: np.ndarray, labels: np.ndarray) -> bool:
    """Class scores against class ids (or 0/1 label rows); see the module's table."""
    if predictions.ndim == 3:
        return True
    if predictions.ndim != 2 or predictions.shape[1] < 2:
        return False
    whole = labels.size > 0 and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels))
    if labels.shape == predictions.shape:
        return bool(whole and np.isin(labels, (0, 1)).all())
    return bool(whole and labels.reshape(labels.shape[0], -1).shape[1] == 1)


def compute_metrics(eval_pred) -> dict[str, float]:
    """`compute_metrics` for any MetaEmbed `Trainer`: regression or classification, read off the shapes.

    Args:
        eval_pred: an `EvalPrediction` (or a `(predictions, labels)` pair); a tuple of model outputs is read from
            its first element, the logits. Shapes as in the module's table: class scores `(samples, classes)` with
            class ids `(samples,)`, 0/1 label rows `(samples, labels)` for multi-label models, per-unit scores
            `(segments, units, classes)` with `-100` where no label applies, else regression values.

    Returns:
        Classification: see `classification_metrics`. Regression: see `regression_metrics`.
    """
    predictions, labels = _predictions_and_labels(eval_pred)
    if _is_classification(predictions, labels):
        return classification_metrics((predictions, labels))
    return regression_metrics((predictions, labels))


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
    predictions, labels = _predictions_and_labels(eval_pred)
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


def _f1_scores(predicted: np.ndarray, gold: np.ndarray, classes: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall and F1 (0 where undefined) of 1-D class ids."""
    true_positive = np.array([np.sum((predicted == c) & (gold == c)) for c in classes], dtype=np.float64)
    predicted_count = np.array([np.sum(predicted == c) for c in classes], dtype=np.float64)
    gold_count = np.array([np.sum(gold == c) for c in classes], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted_count > 0, true_positive / predicted_count, 0.0)
        recall = np.where(gold_count > 0, true_positive / gold_count, 0.0)
        f1 = np.where(predicted_count + gold_count > 0, 2 * true_positive / (predicted_count + gold_count), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1}


def classification_metrics(eval_pred) -> dict[str, float]:
    """`compute_metrics` for a classification `Trainer`: single-label, multi-label or per-unit.

    Args:
        eval_pred: an `EvalPrediction` (or a `(logits, labels)` pair; a tuple of model outputs is read from its first
            element) with logits `(samples, classes)` and class ids `(samples,)`; logits and 0/1 labels of one shape
            `(samples, labels)` (multi-label: a logit above 0 predicts the label); or per-unit logits `(segments,
            units, classes)` with class ids `(segments, units)`, where -100 marks units without a label.

    Returns:
        Single-label and per-unit: `{"accuracy", "f1_macro", "precision_macro", "recall_macro"}` (macro averages
        over every class that occurs in the labels or predictions), plus `f1`, `precision` and `recall` of class 1
        when there are two classes. Multi-label: `{"accuracy"}` (every label of a sample right), `f1_micro` and
        `f1_macro` (over labels).
    """
    logits, labels = _predictions_and_labels(eval_pred)
    if logits.ndim == 2 and labels.shape == logits.shape:
        return _multi_label_metrics(logits, labels)
    if logits.ndim < 2:
        raise ValueError(
            f"classification metrics need class scores (samples, classes); got predictions of shape {logits.shape}: "
            "use regression_metrics for a regression model"
        )
    predicted = logits.argmax(axis=-1).reshape(-1)
    gold = labels.reshape(-1)
    if predicted.shape != gold.shape:
        raise ValueError(
            f"predictions of shape {logits.shape} give {predicted.size} class ids but labels {labels.shape} hold "
            f"{gold.size}; give one class id per sample (or per unit)"
        )
    keep = gold != -100
    predicted, gold = predicted[keep], gold[keep].astype(np.int64)
    if gold.size == 0:
        raise ValueError("no labelled sample: every label is -100")
    classes = np.unique(np.concatenate([gold, predicted]))
    scores = _f1_scores(predicted, gold, classes)
    results = {
        "accuracy": float(np.mean(predicted == gold)),
        "f1_macro": float(np.mean(scores["f1"])),
        "precision_macro": float(np.mean(scores["precision"])),
        "recall_macro": float(np.mean(scores["recall"])),
    }
    if logits.shape[-1] == 2:
        positive = _f1_scores(predicted, gold, np.array([1]))
        results.update({name: float(values[0]) for name, values in positive.items()})
    return results


def _multi_label_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    predicted, gold = logits > 0, labels.astype(bool)
    true_positive = np.sum(predicted & gold, axis=0).astype(np.float64)
    counts = np.sum(predicted, axis=0) + np.sum(gold, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_label = np.where(counts > 0, 2 * true_positive / counts, 0.0)
    total = counts.sum()
    return {
        "accuracy": float(np.mean(np.all(predicted == gold, axis=1))),
        "f1_micro": float(2 * true_positive.sum() / total) if total else 0.0,
        "f1_macro": float(np.mean(per_label)),
    }


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
    values, scalar = _checked_kd(kd, unit)
    pkd = -np.log10(values) - np.log10(KD_UNITS[unit])
    return float(pkd) if scalar else pkd


def _checked_kd(kd, unit: str) -> tuple[np.ndarray, bool]:
    """`kd` as a float64 array (in `unit`) and whether it was a scalar; raises on an unknown unit or a bad KD."""
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
    return values, scalar


# the epsilon the study's reference code adds to KD (in molar) before its logarithm
REFERENCE_KD_EPSILON = 1e-10


def kd_to_reference_label(kd: float | Sequence[float] | np.ndarray, unit: str = "M") -> float | np.ndarray:
    """The label the study's reference code trains on: `|log10(KD + 1e-10)|` with KD in molar.

    For comparing RMSE or Pearson with the study's published figures only; never the default (use `kd_to_pkd`).
    Taken from Proteinea/ppiseq (`ppiseq/data_adapters/preprocessing.py`, `log_transform_labels` with
    `label_transform_config: {log_base: 10, eps: 1e-10}` in `training/config/train_config.yaml`). Against the exact
    pKd it:

    - saturates near 10: 1 pM gives 9.996 and 1 fM 10.000 (pKd 12 and 15), 0.1 nM gives 9.699 (pKd 10);
    - flips sign above 1 M: 10 M gives +1 where pKd is -1, so a very weak binder scores like a 0.1 M one;
    - agrees with pKd to within 0.05 from about 1 nM up to 1 M.

    Spearman is unchanged wherever all KDs lie between 0 and 1 M (the transform is monotone there).

    Args:
        kd: one dissociation constant or an array of them (any shape; torch tensors are accepted too).
        unit: unit of `kd`: one of M, mM, uM (or µM), nM, pM, fM.

    Returns:
        A float for a scalar input, else a float64 array of the same shape.

    Raises:
        ValueError: on an unknown unit, or a KD that is zero, negative or not finite (naming its index).
    """
    values, scalar = _checked_kd(kd, unit)
    label = np.abs(np.log10(values * KD_UNITS[unit] + REFERENCE_KD_EPSILON))
    return float(label) if scalar else label


# label transforms by name: each maps a KD (and its unit) to a regression label
LABEL_TRANSFORMS = {"pkd": kd_to_pkd, "reference": kd_to_reference_label}


def get_label_transform(name: str):
    """The label transform registered under `name` in `LABEL_TRANSFORMS` (`"pkd"`: exact -log10 KD, the default;
    `"reference"`: the study's `|log10(KD + 1e-10)|`, for comparison with published figures only).

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if name not in LABEL_TRANSFORMS:
        raise ValueError(f"unknown label transform {name!r}; choose one of: {', '.join(LABEL_TRANSFORMS)}")
    return LABEL_TRANSFORMS[name]


__all__ = [
    "LABEL_TRANSFORMS",
    "REFERENCE_KD_EPSILON",
    "classification_metrics",
    "compute_metrics",
    "get_label_transform",
    "kd_to_pkd",
    "kd_to_reference_label",
    "pearson",
    "regression_metrics",
    "rmse",
    "spearman",
    "spearman_ci",
]
