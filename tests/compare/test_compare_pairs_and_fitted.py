"""Pair data crossed with architectures (regression: Spearman, Pearson, RMSE), and fitted fusions: picked up by the
default list when registered, skipped with their reason when this version cannot fit them."""

import numpy as np
import pytest

from hf_metaembed.compare import Budget, Comparison, compare, default_fusions
from hf_metaembed.modeling.fusion import FUSIONS, MeanFusion

LIGANDS = [["MKTAYIAKQR", "GSH"], ["WLLEK"], ["ACDEFGHIK"], ["MKTAY"], ["QQRRKKDE"], ["HHWKL", "MA"]] * 2
RECEPTORS = [["MVLSPADKT"], ["QQRRKK", "DE"], ["HHW"], ["GSHMVL"], ["KTAYI"], ["WWLEE"]] * 2


def test_pair_architectures_regression(tiny_esm, tiny_ankh, tmp_path):
    rng = np.random.default_rng(0)
    labels = [float(len("".join(lig)) + rng.normal()) for lig in LIGANDS]
    result = compare(
        [tiny_esm, tiny_ankh], names=["esm", "ankh"], ligand=LIGANDS, receptor=RECEPTORS, labels=labels,
        output_dir=tmp_path, fusions=["concat"], architectures=["ec", "hp"], folds=3, budget=Budget(epochs=2),
        resamples=50, permutations=50, progress=False,
    )  # fmt: skip
    assert result.task == "regression" and result.metric == "spearman"
    assert [(row["cell"], row["architecture"]) for row in result.rows] == [
        ("esm", "ec"), ("ankh", "ec"), ("esm + ankh", "ec"), ("esm", "hp"), ("ankh", "hp"), ("esm + ankh", "hp"),
    ]  # fmt: skip
    assert {"spearman_mean", "pearson_mean", "rmse_mean"} <= set(result.rows[0])
    cache = result.summary["cache"]  # ec's sides and hp's chains: every unique segment read once per backbone
    assert set(cache["backbone_segments_read"].values()) == {cache["unique_segments"]}
    assert all(row["reference"] in ("esm", "ankh") for row in result.rows if row["fusion"] == "concat")
    assert "| architecture |" in result.to_markdown()


@pytest.fixture
def fitted_fusion():
    @FUSIONS.register("test_fitted")
    class FittedMean(MeanFusion):
        """A fusion that says it must be fitted first (as issue 19's fitted meta-embeddings will)."""

        needs_fitting = True

    yield "test_fitted"
    FUSIONS.pop("test_fitted")


def test_fitted_fusions_join_defaults_and_are_skipped_with_a_reason(fitted_fusion, tiny_bert, tiny_static, tmp_path):
    assert default_fusions()[-1] == fitted_fusion and default_fusions()[0] == "concat"
    texts = [
        "a good movie with a fine cast", "a bad movie with a dull cast", "great fun for the whole family",
        "a boring plot that goes nowhere", "the best film of the whole year", "the worst story told in years",
    ] * 2  # fmt: skip
    labels = ["pos", "neg"] * 6
    comparison = Comparison(
        [tiny_bert, tiny_static], sequences=texts, labels=labels, output_dir=tmp_path, fusions=["dme", fitted_fusion],
        folds=3, budget=Budget(epochs=1), resamples=20, permutations=20, progress=False,
    )  # fmt: skip
    result = comparison.run()
    assert [row["fusion"] for row in result.rows] == ["alone", "alone", "dme"]
    assert result.skipped[0]["cell"].endswith(f"({fitted_fusion})")
    assert "must be fitted before training" in result.skipped[0]["reason"]
    assert f"skipped {result.skipped[0]['cell']}" in result.to_markdown()


def test_the_library_fitted_fusions_are_fitted_per_fold_and_compared(tiny_bert, tiny_static, tmp_path, monkeypatch):
    """`svd` is a default cell and is fitted on each fold's training features only (through hf_metaembed.fitting)."""
    from hf_metaembed.compare import training

    assert "svd" in default_fusions() and "gcca" in default_fusions()
    fitted_on = []
    real_fit = training.fit_fusion

    def recording_fit(model, arrays, **kwargs):
        fitted_on.append(sum(len(rows) for rows in arrays[:1]))
        return real_fit(model, arrays, **kwargs)

    monkeypatch.setattr(training, "fit_fusion", recording_fit)
    texts = [
        "a good movie with a fine cast", "a bad movie with a dull cast", "great fun for the whole family",
        "a boring plot that goes nowhere", "the best film of the whole year", "the worst story told in years",
    ] * 2  # fmt: skip
    labels = ["pos", "neg"] * 6
    result = compare(
        [tiny_bert, tiny_static], sequences=texts, labels=labels, output_dir=tmp_path, fusions=["svd"],
        folds=3, budget=Budget(epochs=1), resamples=20, permutations=20, progress=False,
    )  # fmt: skip
    assert not result.skipped
    assert [row["fusion"] for row in result.rows] == ["alone", "alone", "svd"]
    assert len(fitted_on) == 3  # once per fold
    all_words = sum(len(text.split()) for text in texts)
    assert all(0 < count < all_words for count in fitted_on)  # the training part only, never every sample


def test_a_fold_too_small_to_fit_is_skipped_with_the_reason(tiny_bert, tiny_static, tmp_path):
    texts = ["good movie", "bad movie", "great fun", "boring plot", "best film", "worst story"] * 2
    result = compare(
        [tiny_bert, tiny_static], sequences=texts, labels=["pos", "neg"] * 6, output_dir=tmp_path, fusions=["svd"],
        folds=3, budget=Budget(epochs=1), resamples=20, permutations=20, progress=False,
    )  # fmt: skip
    assert [row["fusion"] for row in result.rows] == ["alone", "alone"]
    assert result.skipped[0]["cell"].endswith("(svd)")
    assert "could not be fitted on this fold's training features" in result.skipped[0]["reason"]
    assert "fit on at least fusion_dim (16) vectors" in result.skipped[0]["reason"]
