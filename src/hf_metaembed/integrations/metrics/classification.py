"""Classification metrics: accuracy, F1, precision and recall of single-label, multi-label and per-unit models."""

import numpy as np

from .arrays import predictions_and_labels


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
    logits, labels = predictions_and_labels(eval_pred)
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
