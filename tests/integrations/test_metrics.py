"""Regression metrics and pKd conversion, checked against scipy (a test-only dependency); classification metrics."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from transformers import EvalPrediction

from hf_metaembed.integrations.metrics import (
    classification_metrics,
    compute_metrics,
    kd_to_pkd,
    pearson,
    rmse,
    spearman,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 6, size=40).astype(float)  # many ties
    predictions = np.round(labels + rng.normal(scale=1.5, size=40))  # ties among predictions too
    metrics = compute_metrics(EvalPrediction(predictions=predictions[:, None], label_ids=labels))
    assert metrics["spearman"] == pytest.approx(stats.spearmanr(predictions, labels)[0], abs=1e-12)
    assert metrics["pearson"] == pytest.approx(stats.pearsonr(predictions, labels)[0], abs=1e-12)
    assert metrics["rmse"] == pytest.approx(math.sqrt(np.mean((predictions - labels) ** 2)), abs=1e-12)


def test_perfect_and_reversed_order():
    labels = np.array([1.0, 2.0, 3.0, 10.0])
    assert spearman(labels**3, labels) == pytest.approx(1.0)
    assert spearman(-labels, labels) == pytest.approx(-1.0)
    assert pearson(2 * labels + 1, labels) == pytest.approx(1.0)
    assert rmse(labels + 2, labels) == pytest.approx(2.0)


def test_constant_predictions_give_nan_correlations():
    metrics = compute_metrics((np.zeros(5), np.arange(5.0)))
    assert math.isnan(metrics["spearman"]) and math.isnan(metrics["pearson"])
    assert metrics["rmse"] == pytest.approx(math.sqrt(np.mean(np.arange(5.0) ** 2)))


def test_tuple_of_outputs_and_tensors_are_accepted():
    logits = torch.tensor([[0.1], [0.4], [0.2]])
    extra = np.zeros((3, 7))  # e.g. pooled outputs a Trainer also gathered
    metrics = compute_metrics(((logits.numpy(), extra), torch.tensor([1.0, 3.0, 2.0])))
    assert metrics["spearman"] == pytest.approx(1.0)


def test_several_targets_report_means_and_per_target_values():
    labels = np.stack([np.arange(6.0), np.arange(6.0) ** 2], axis=1)
    predictions = np.stack([np.arange(6.0), -np.arange(6.0)], axis=1)
    metrics = compute_metrics((predictions, labels))
    assert metrics["spearman_0"] == pytest.approx(1.0) and metrics["spearman_1"] == pytest.approx(-1.0)
    assert metrics["spearman"] == pytest.approx(0.0)


def test_bad_metric_inputs_raise():
    with pytest.raises(ValueError, match="shape"):
        compute_metrics((np.zeros(4), np.zeros(5)))
    with pytest.raises(ValueError, match=r"samples \[2\]"):
        compute_metrics((np.array([1.0, 2.0, np.nan]), np.arange(3.0)))
    with pytest.raises(ValueError, match="at least 2"):
        compute_metrics((np.array([1.0]), np.array([1.0])))


@pytest.mark.parametrize(
    ("kd", "unit", "expected"),
    [(1e-9, "M", 9.0), (1.0, "nM", 9.0), (10.0, "uM", 5.0), (1.0, "µM", 6.0), (1.0, "fM", 15.0), (2.0, "mM", 2.69897)],
)
def test_kd_to_pkd(kd, unit, expected):
    assert kd_to_pkd(kd, unit) == pytest.approx(expected, abs=1e-5)


def test_kd_to_pkd_is_not_capped():
    # the reference code's |log10(KD + 1e-10)| caps pKd near 10; sub-picomolar binders must keep their value
    pkd = kd_to_pkd(np.array([1e-12, 1e-14, 3e-16]))
    np.testing.assert_allclose(pkd, [12.0, 14.0, -math.log10(3e-16)])
    assert isinstance(kd_to_pkd(1e-13), float) and kd_to_pkd(1e-13) == pytest.approx(13.0)
    np.testing.assert_allclose(kd_to_pkd(torch.tensor([1e-3, 1e-6], dtype=torch.float64)), [3.0, 6.0])


@pytest.mark.parametrize(
    ("kd", "where"), [([1.0, 0.0, 3.0], "index 1"), ([[1.0, 2.0], [-4.0, 1.0]], r"index \(1, 0\)")]
)
def test_non_positive_kd_names_its_index(kd, where):
    with pytest.raises(ValueError, match=where):
        kd_to_pkd(kd)


def test_kd_errors():
    with pytest.raises(ValueError, match="positive finite"):
        kd_to_pkd(float("nan"))
    with pytest.raises(ValueError, match="unknown KD unit 'kM'"):
        kd_to_pkd(1.0, "kM")


def test_classification_metrics_count_accuracy_and_macro_f1():
    logits = np.array([[2.0, 0.1, 0.0], [0.0, 3.0, 0.0], [0.0, 2.0, 1.0], [0.0, 0.0, 5.0], [1.0, 0.0, 0.0]])
    labels = np.array([0, 1, 2, 2, 1])  # predicted 0, 1, 1, 2, 0
    metrics = classification_metrics(EvalPrediction(predictions=(logits, np.zeros(5)), label_ids=labels))
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    # per-label F1 = 2 TP / (predicted + true): label 0: 2/3, label 1: 2/4, label 2: 2/3
    assert metrics["f1_macro"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)
    perfect = classification_metrics((np.eye(3), np.arange(3)))
    assert perfect == {"accuracy": 1.0, "f1_macro": 1.0, "precision_macro": 1.0, "recall_macro": 1.0}
