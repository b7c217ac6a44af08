"""`hf_metaembed.compare` end to end on tiny backbones: one read of each backbone, the same splits for every cell,
the outputs, a resumed run that trains and reads nothing, and bad input refused before any backbone runs."""

import json

import numpy as np
import pytest
from conftest import polarity_texts

from hf_metaembed.compare import Budget, Comparison, ComparisonError, compare
from hf_metaembed.compare.runner import RUNS_FOLDER, SPLITS_FILE

TEXTS, LABELS = polarity_texts(24)
BUDGET = Budget(epochs=4, patience=2, batch_size=8)


@pytest.fixture(scope="module")
def comparison(tiny_bert, tiny_static, tmp_path_factory):
    """A small grid (2 backbones alone, concat and dme, 2 poolings) x 2 seeds on 3 folds, and its output folder."""
    output = tmp_path_factory.mktemp("comparison")
    result = compare(
        [tiny_bert, tiny_static],
        names=["bert", "static"],
        sequences=TEXTS,
        labels=LABELS,
        output_dir=output,
        fusions=["concat", "dme"],
        poolings=["mean", "max"],
        seeds=2,
        folds=3,
        budget=BUDGET,
        resamples=200,
        permutations=200,
        progress=False,
    )
    return result, output


def test_every_cell_and_seed_used_the_same_splits(comparison):
    result, output = comparison
    splits = json.loads((output / SPLITS_FILE).read_text())
    records = [json.loads(path.read_text()) for path in sorted((output / RUNS_FOLDER).glob("*.json"))]
    assert len(records) == 8 * 2
    assert {record["split_digest"] for record in records} == {splits["digest"]}
    tested = [i for fold in splits["folds"] for i in fold["test"]]
    assert sorted(tested) == list(range(len(TEXTS)))  # 3-fold: every item tested once per run
    assert all(len(record["predictions"]) == len(tested) for record in records)
    assert {row["split_digest"] for row in result.rows} == {splits["digest"]}


def test_each_backbone_is_read_once_and_no_cell_runs_a_backbone(comparison):
    result, _ = comparison
    cache = result.summary["cache"]
    assert cache["unique_segments"] == len(set(TEXTS))
    assert cache["backbone_segments_read"] == {"bert": cache["unique_segments"], "static": cache["unique_segments"]}
    assert all(run["backbone_forward_calls"] == 0 for run in result.runs)


def test_table_rows_paired_tests_and_files(comparison):
    result, output = comparison
    assert [(row["cell"], row["fusion"], row["pooling"]) for row in result.rows[:4]] == [
        ("bert", "alone", "mean"),
        ("static", "alone", "mean"),
        ("bert + static", "concat", "mean"),
        ("bert + static", "dme", "mean"),
    ]
    for row in result.rows:
        assert row["ci_low"] <= row["value"] <= row["ci_high"] and row["seeds"] == 2
        assert row["seed_values"] == pytest.approx(
            [run["accuracy"] for run in result.runs if run["cell"] == row["cell"] and run["fusion"] == row["fusion"]
             and run["pooling"] == row["pooling"]]
        )  # fmt: skip
    for pooling in ("mean", "max"):
        singles = [row for row in result.rows if row["fusion"] == "alone" and row["pooling"] == pooling]
        best = max(singles, key=lambda row: row["value"])
        for row in result.rows:
            if row["fusion"] != "alone" and row["pooling"] == pooling:
                assert row["reference"] == best["cell"]
                assert row["effect"] == pytest.approx(row["value"] - best["value"])
                assert row["effect_low"] <= row["effect"] <= row["effect_high"] and 0 < row["p_value"] <= 1
    assert sum(row["best"] for row in result.rows) == 1
    assert result.best["value"] == max(row["value"] for row in result.rows)
    table = result.to_markdown()
    assert table.count("★") == 1 and "| pooling |" in table and "best single" in table
    assert (output / "cells.csv").read_text().count("\n") == len(result.rows) + 1
    assert (output / "runs.csv").read_text().count("\n") == 16 + 1
    assert (output / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((output / "results.json").read_text())["cells"][0]["cell"] == "bert"


def test_a_second_call_resumes_reading_and_training_nothing(comparison, tiny_bert, tiny_static):
    first, output = comparison
    again = compare(
        [tiny_bert, tiny_static],
        names=["bert", "static"],
        sequences=TEXTS,
        labels=LABELS,
        output_dir=output,
        fusions=["concat", "dme"],
        poolings=["mean", "max"],
        seeds=2,
        folds=3,
        budget=BUDGET,
        resamples=200,
        permutations=200,
        progress=False,
    )
    assert again.summary["runs_trained"] == 0 and again.summary["runs_resumed"] == 16
    assert set(again.summary["cache"]["backbone_segments_read"].values()) == {0}
    assert [row["value"] for row in again.rows] == [row["value"] for row in first.rows]
    with pytest.raises(ComparisonError, match="holds a comparison made with other budget"):
        Comparison(
            [tiny_bert, tiny_static], sequences=TEXTS, labels=LABELS, output_dir=output, folds=3,
            budget=Budget(epochs=5), progress=False,
        ).run()  # fmt: skip


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"fusions": ["dmee"]}, "unknown fusion 'dmee' in --fusions; choose from: concat, mean, dme"),
        ({"poolings": ["avg"]}, "unknown pooling 'avg' in --poolings; choose from: mean, max, attention"),
        ({"layers": ["top"]}, "unknown layer 'top' in --layers; choose from: last, mix, or a hidden-state index"),
        ({"labels": ["pos"] * 24}, "every label is 'pos'; classification needs two or more classes"),
        ({"split": ["train"] * 20 + ["validation"] * 4}, "gives no test items"),
        ({"architectures": ["hp"]}, "pair a ligand with a receptor, but the data holds plain sequences"),
        ({"metric": "spearman"}, "unknown classification metric 'spearman'; choose one of: accuracy"),
    ],
)
def test_bad_input_is_refused_before_any_backbone_is_loaded(tmp_path, arguments, message):
    settings = {"sequences": TEXTS, "labels": LABELS, "output_dir": tmp_path / "out", **arguments}
    with pytest.raises(ComparisonError, match=message):
        Comparison(["/no/such/backbone-a", "/no/such/backbone-b"], **settings)
    assert not (tmp_path / "out").exists()


def test_a_layer_index_out_of_range_is_refused_before_the_cache_is_built(tiny_bert, tiny_static, tmp_path):
    comparison = Comparison(
        [tiny_bert, tiny_static], sequences=TEXTS, labels=LABELS, output_dir=tmp_path, layers=["last", "7"],
        folds=3, progress=False,
    )  # fmt: skip
    with pytest.raises(ComparisonError, match="layer 7 in --layers is out of range for backbone"):
        comparison.run()
    assert not (tmp_path / "feature_cache" / "index.json").exists()


def test_layers_from_one_stacked_cache(tiny_bert, tiny_static, tmp_path):
    """Several layer choices read every hidden state once; `last` from the stack equals the plain last layer."""
    common = dict(
        sequences=TEXTS, labels=LABELS, fusions=["concat"], folds=3, seeds=1, budget=BUDGET, resamples=50,
        permutations=50, progress=False,
    )  # fmt: skip
    stacked = compare([tiny_bert, tiny_static], output_dir=tmp_path / "stacked", layers=["last", "1", "mix"], **common)
    assert [row["layer"] for row in stacked.rows] == ["last"] * 3 + [1] * 3 + ["mix"] * 3
    assert set(stacked.summary["cache"]["backbone_segments_read"].values()) == {len(set(TEXTS))}
    compare([tiny_bert, tiny_static], output_dir=tmp_path / "plain", **common)
    predictions = {}
    for name, folder in (("stacked", tmp_path / "stacked"), ("plain", tmp_path / "plain")):
        for path in (folder / RUNS_FOLDER).glob("*.json"):
            record = json.loads(path.read_text())
            if record["cell"]["layer"] == "last":
                predictions[(name, tuple(record["cell"]["backbones"]))] = np.array(record["predictions"])
    for backbones in ((0,), (1,), (0, 1)):
        np.testing.assert_allclose(predictions[("stacked", backbones)], predictions[("plain", backbones)], atol=1e-5)
