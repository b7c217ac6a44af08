"""Predictions and labels as numpy arrays, whatever `Trainer` or a caller hands the metrics (torch tensors, lists,
tuples of model outputs)."""

import numpy as np


def to_numpy(array, dtype=None) -> np.ndarray:
    """`array` (a torch tensor, on any device, or anything `np.asarray` reads) as a numpy array."""
    return np.asarray(array.detach().cpu() if hasattr(array, "detach") else array, dtype=dtype)


def predictions_and_labels(eval_pred) -> tuple[np.ndarray, np.ndarray]:
    """The predictions (the first model output when there are several, e.g. the logits) and labels as arrays."""
    predictions, labels = eval_pred[0], eval_pred[1]
    if isinstance(predictions, (tuple, list)) and predictions and not np.isscalar(predictions[0]):
        predictions = predictions[0]
    return to_numpy(predictions), to_numpy(labels)
