"""The comparison's statistics against direct computations on fixed numbers: the percentile bootstrap, the paired
bootstrap, the exact permutation test (hand-checkable), and MCC, AUROC and macro-F1 against scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import f1_score, matthews_corrcoef, roc_auc_score

from hf_metaembed.compare.statistics import (
    METRICS,
    auroc,
    bootstrap_interval,
    matthews_correlation,
    paired_test,
)


def one_hot_scores(predicted: list[int], classes: int = 2) -> np.ndarray:
    return np.eye(classes)[predicted]


def test_bootstrap_interval_equals_the_quantiles_of_the_resampled_mean_over_seeds():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 30)
    scores = rng.normal(size=(2, 30, 2))  # two seeds
    interval = bootstrap_interval("accuracy", scores, labels, resamples=200, seed=7)
    draws = np.random.default_rng(7).integers(0, 30, size=(200, 30))
    direct = [np.mean([np.mean(s[d].argmax(-1) == labels[d]) for s in scores]) for d in draws]
    low, high = np.quantile(direct, [0.025, 0.975])
    assert (interval.low, interval.high) == pytest.approx((low, high))
    per_seed = [np.mean(s.argmax(-1) == labels) for s in scores]
    assert interval.value == pytest.approx(np.mean(per_seed))
    assert interval.seed_std == pytest.approx(np.std(per_seed, ddof=1))


def test_bootstrap_interval_of_an_accuracy_matches_the_binomial_spread():
    labels = np.zeros(400, dtype=int)
    predicted = np.array([0] * 280 + [1] * 120)  # accuracy 0.7
    interval = bootstrap_interval("accuracy", one_hot_scores(predicted)[None], labels, resamples=4000, seed=0)
    half_width = 1.96 * np.sqrt(0.7 * 0.3 / 400)
    assert interval.value == pytest.approx(0.7)
    assert interval.low == pytest.approx(0.7 - half_width, abs=0.01)
    assert interval.high == pytest.approx(0.7 + half_width, abs=0.01)


def test_exact_permutation_p_value_on_hand_checkable_items():
    # a is right on items 0-4 where b is wrong; both are right on items 5-7: only the 5 discordant items matter,
    # and of the 2**5 ways to swap them exactly 2 give a difference as large (all kept, all swapped): p = 2/32
    labels = np.zeros(8, dtype=int)
    a = one_hot_scores([0, 0, 0, 0, 0, 0, 0, 0])[None]
    b = one_hot_scores([1, 1, 1, 1, 1, 0, 0, 0])[None]
    test = paired_test("accuracy", a, b, labels, resamples=100, permutations=1000, seed=0)
    assert test.exact and test.permutations == 2**8
    assert test.effect == pytest.approx(5 / 8)
    assert test.p_value == pytest.approx(2 / 32)
    # one discordant item the other way: |difference| >= 4/8 needs at most one of the 6 discordant items flipped
    # against the observed direction: 2 * (1 + 6) / 2**6
    b = one_hot_scores([1, 1, 1, 1, 1, 0, 0, 1])[None]
    a = one_hot_scores([0, 0, 0, 0, 0, 0, 0, 1])[None]
    a[0, 7], b[0, 7] = b[0, 7].copy(), one_hot_scores([0])[0]  # item 7: a wrong, b right
    test = paired_test("accuracy", a, b, labels, resamples=100, permutations=1000, seed=0)
    assert test.effect == pytest.approx(4 / 8)
    assert test.p_value == pytest.approx(2 * 7 / 64)


def test_paired_bootstrap_interval_equals_direct_computation_and_identical_cells_have_p_one():
    rng = np.random.default_rng(5)
    labels = rng.normal(size=40)
    a = labels[None] + rng.normal(scale=0.5, size=(3, 40))
    b = labels[None] + rng.normal(scale=1.0, size=(3, 40))
    test = paired_test("spearman", a, b, labels, resamples=300, permutations=200, seed=11)
    draws = np.random.default_rng(11).integers(0, 40, size=(300, 40))

    def value(predictions, items):
        return np.mean([METRICS["spearman"](p[items], labels[items]) for p in predictions])

    effects = [value(a, d) - value(b, d) for d in draws]
    assert (test.low, test.high) == pytest.approx(tuple(np.quantile(effects, [0.025, 0.975])))
    assert test.effect == pytest.approx(value(a, slice(None)) - value(b, slice(None)))
    assert not test.exact and 0 < test.p_value <= 1
    same = paired_test("spearman", a, a.copy(), labels, resamples=50, permutations=200, seed=0)
    assert same.effect == 0 and same.p_value == 1.0


@pytest.mark.parametrize("classes", [2, 3])
def test_mcc_auroc_and_macro_f1_agree_with_scikit_learn(classes):
    rng = np.random.default_rng(classes)
    labels = rng.integers(0, classes, 60)
    scores = rng.normal(size=(60, classes)) + 1.5 * np.eye(classes)[labels]
    predicted = scores.argmax(-1)
    assert matthews_correlation(scores, labels) == pytest.approx(matthews_corrcoef(labels, predicted))
    assert METRICS["f1_macro"](scores, labels) == pytest.approx(f1_score(labels, predicted, average="macro"))
    if classes == 2:
        expected = roc_auc_score(labels, scores[:, 1] - scores[:, 0])
    else:
        probabilities = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
        expected = roc_auc_score(labels, probabilities, multi_class="ovr", average="macro")
    assert auroc(scores, labels) == pytest.approx(expected)


def test_auroc_counts_ties_half_and_is_undefined_with_one_class():
    scores = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 0.0], [0.0, 2.0]])
    assert auroc(scores, np.array([1, 0, 0, 1])) == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    assert np.isnan(auroc(scores, np.array([1, 1, 1, 1])))
