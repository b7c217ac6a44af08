"""`compute_metrics`: one `Trainer` metrics function for every MetaEmbed head, the task read off the shapes (see the
table in the package's docstring)."""

import numpy as np

from .arrays import predictions_and_labels
from .classification import classification_metrics
from .regression import regression_metrics


def _is_classification(predictions: np.ndarray, labels: np.ndarray) -> bool:
    """Class scores against class ids (or 0/1 label rows); see the package's table."""
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
            its first element, the logits. Shapes as in the package's table: class scores `(samples, classes)` with
            class ids `(samples,)`, 0/1 label rows `(samples, labels)` for multi-label models, per-unit scores
            `(segments, units, classes)` with `-100` where no label applies, else regression values.

    Returns:
        Classification: see `classification_metrics`. Regression: see `regression_metrics`.
    """
    predictions, labels = predictions_and_labels(eval_pred)
    if _is_classification(predictions, labels):
        return classification_metrics((predictions, labels))
    return regression_metrics((predictions, labels))
