"""Label transforms (exact pKd and the study's reference label) and the bootstrap interval for Spearman."""

import math

import numpy as np
import pytest
from scipy import stats

from hf_metaembed.integrations.metrics import (
    LABEL_TRANSFORMS,
    compute_metrics,
    get_label_transform,
    kd_to_pkd,
    kd_to_reference_label,
    spearman,
    spearman_ci,
)
from hf_metaembed.integrations.metrics.regression import _bootstrap_spearman


def test_transforms_are_registered_by_name():
    assert LABEL_TRANSFORMS == {"pkd": kd_to_pkd, "reference": kd_to_reference_label}
    assert get_label_transform("reference") is kd_to_reference_label
    with pytest.raises(ValueError, match="unknown label transform 'log'; choose one of: pkd, reference"):
        get_label_transform("log")


@pytest.mark.parametrize(
    ("kd", "expected"),
    [
        (1e-6, 6 - math.log10(1 + 1e-4)),  # |log10(1e-6 + 1e-10)|: within 1e-4 of pKd 6
        (1e-9, 9 - math.log10(1.1)),  # 8.9586 against pKd 9
        (1e-10, 10 - math.log10(2)),  # 9.699 against pKd 10
        (1e-12, 10 - math.log10(1.01)),  # 9.9957: saturated, pKd is 12
        (1e-15, 10 - math.log10(1.00001)),  # 10.0000, pKd is 15
    ],
)
def test_reference_label_values(kd, expected):
    assert kd_to_reference_label(kd) == pytest.approx(expected, abs=1e-9)
    assert kd_to_reference_label(kd * 1e9, "nM") == pytest.approx(expected, abs=1e-9)


def test_reference_label_saturates_near_10_and_flips_sign_above_1_molar():
    tiny = kd_to_reference_label(np.array([1e-13, 1e-16, 1e-20]))
    assert np.all(tiny < 10.0) and np.all(tiny > 9.999)  # three binders 7 orders apart look the same
    np.testing.assert_allclose(kd_to_pkd(np.array([1e-13, 1e-16, 1e-20])), [13.0, 16.0, 20.0])
    # above 1 M the absolute value flips the sign: 10 M scores +1 (as 0.1 M does) where pKd is -1
    assert kd_to_reference_label(10.0) == pytest.approx(1.0) and kd_to_pkd(10.0) == pytest.approx(-1.0)
    assert kd_to_reference_label(10.0) == pytest.approx(kd_to_reference_label(0.1), abs=1e-8)
    assert kd_to_reference_label(1.0) == pytest.approx(0.0, abs=1e-9)
    # between 0 and 1 M it is monotone like pKd, so Spearman against pKd is exactly 1 there
    kd = np.logspace(-15, -0.5, 50)
    assert spearman(kd_to_reference_label(kd), kd_to_pkd(kd)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="KD at index 1 is 0.0 M"):
        kd_to_reference_label([1e-9, 0.0])  # the reference would turn 0 into a label of 10


def test_spearman_ci_contains_the_point_estimate_and_is_reproducible():
    rng = np.random.default_rng(0)
    labels = rng.normal(size=200)
    predictions = labels + rng.normal(size=200)
    low, high = spearman_ci(predictions, labels)
    assert low < spearman(predictions, labels) < high
    assert 0.0 < high - low < 0.3
    assert spearman_ci(predictions, labels) == (low, high)
    assert spearman_ci(predictions, labels, seed=1) != (low, high)
    narrow = spearman_ci(predictions, labels, alpha=0.5)
    assert low < narrow[0] < narrow[1] < high  # a 50% interval lies inside the 95% one
    more = np.concatenate([labels, rng.normal(size=1800)])
    more_predictions = more + rng.normal(size=2000)
    wide_low, wide_high = spearman_ci(more_predictions, more)
    assert wide_high - wide_low < (high - low) / 2  # ten times the samples: about a third of the width


def test_bootstrap_replicates_equal_scipy_on_the_same_resamples():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, size=30).astype(float)  # ties, and repeated draws make more ties
    predictions = np.round(labels + rng.normal(size=30))
    draws = rng.integers(0, 30, size=(40, 30))
    ours = _bootstrap_spearman(predictions[:, None], labels[:, None], draws)
    expected = [stats.spearmanr(predictions[draw], labels[draw])[0] for draw in draws]
    np.testing.assert_allclose(ours, expected, atol=1e-12)


def test_spearman_ci_with_several_targets_and_degenerate_inputs():
    rng = np.random.default_rng(4)
    labels = rng.normal(size=(100, 2))
    predictions = labels + rng.normal(size=(100, 2))
    low, high = spearman_ci(predictions, labels)
    mean_rho = np.mean([spearman(predictions[:, j], labels[:, j]) for j in range(2)])
    assert low < mean_rho < high
    assert all(math.isnan(value) for value in spearman_ci(np.zeros(20), np.arange(20.0)))
    with pytest.raises(ValueError, match="n_boot is 0"):
        spearman_ci(predictions, labels, n_boot=0)
    with pytest.raises(ValueError, match="alpha is 1.5"):
        spearman_ci(predictions, labels, alpha=1.5)
    with pytest.raises(ValueError, match="at least 2 samples"):
        spearman_ci([1.0], [2.0])


def test_compute_metrics_reports_the_interval():
    rng = np.random.default_rng(5)
    labels = rng.normal(size=80)
    predictions = labels + rng.normal(size=80)
    metrics = compute_metrics((predictions[:, None], labels))
    assert metrics["spearman_ci_low"] < metrics["spearman"] < metrics["spearman_ci_high"]
    assert (metrics["spearman_ci_low"], metrics["spearman_ci_high"]) == spearman_ci(predictions, labels)
