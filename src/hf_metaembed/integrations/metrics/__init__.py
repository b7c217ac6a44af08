"""`Trainer` metrics (regression metrics for binding-affinity models; accuracy and F1 for classifiers, per sample or
per unit), and the conversion of dissociation constants to pKd.

`compute_metrics` reads the task off the shapes `Trainer` hands it, so one function serves every MetaEmbed head:

    predictions                        labels                         task: metrics
    (samples,) or (samples, targets)   the same shape                 regression: Spearman (+ bootstrap interval),
                                                                      Pearson, RMSE
    (samples, classes), classes >= 2   (samples,) class ids           single-label: accuracy, F1, precision, recall
    (samples, labels)                  (samples, labels) of 0 and 1   multi-label: exact-match accuracy, F1
    (segments, units, classes)         (segments, units), -100 pads   per-unit: as single-label, labelled units only

Not model code (never copied next to a saved model); uses numpy only, not scipy. `regression`, `classification`
and `kd_labels` hold the three kinds; `compute` picks one by the shapes.
"""

from .classification import classification_metrics
from .compute import compute_metrics
from .kd_labels import (
    KD_UNITS,
    LABEL_TRANSFORMS,
    REFERENCE_KD_EPSILON,
    check_kd_unit,
    get_label_transform,
    kd_to_pkd,
    kd_to_reference_label,
)
from .regression import pearson, regression_metrics, rmse, spearman, spearman_ci

__all__ = [
    "KD_UNITS",
    "LABEL_TRANSFORMS",
    "REFERENCE_KD_EPSILON",
    "check_kd_unit",
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
