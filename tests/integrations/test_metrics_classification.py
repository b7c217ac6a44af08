"""`compute_metrics` serves classifiers as well as regressors: single-label, multi-label and per-unit, checked against
scikit-learn, and through a real `Trainer` with a 2-class model."""

import numpy as np
import pytest
import torch
from transformers import EvalPrediction, Trainer, TrainingArguments

from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedProcessor
from hf_metaembed.integrations.metrics import classification_metrics, compute_metrics
from hf_metaembed.integrations.trainer import MetaEmbedDataCollator, MetaEmbedDataset

sklearn_metrics = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("classes", [2, 4])
def test_single_label_classification_matches_scikit_learn(classes):
    rng = np.random.default_rng(classes)
    logits = rng.normal(size=(12, classes)).astype(np.float32)
    labels = rng.integers(0, classes, size=12)
    metrics = compute_metrics(EvalPrediction(predictions=logits, label_ids=labels))
    predicted = logits.argmax(-1)
    assert metrics["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(labels, predicted))
    assert metrics["f1_macro"] == pytest.approx(sklearn_metrics.f1_score(labels, predicted, average="macro"))
    assert metrics["precision_macro"] == pytest.approx(
        sklearn_metrics.precision_score(labels, predicted, average="macro", zero_division=0)
    )
    assert metrics["recall_macro"] == pytest.approx(
        sklearn_metrics.recall_score(labels, predicted, average="macro", zero_division=0)
    )
    if classes == 2:
        assert metrics["f1"] == pytest.approx(sklearn_metrics.f1_score(labels, predicted))
    else:
        assert "f1" not in metrics
    # the logits tuple a model with several outputs gives, and labels as a column
    assert compute_metrics((logits, labels[:, None])) == metrics
    assert classification_metrics((torch.tensor(logits), torch.tensor(labels))) == metrics


def test_multi_label_and_per_unit_classification():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(10, 3))
    labels = rng.integers(0, 2, size=(10, 3)).astype(np.float32)
    metrics = compute_metrics(EvalPrediction(predictions=logits, label_ids=labels))
    predicted = (logits > 0).astype(int)
    assert metrics["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(labels, predicted))
    assert metrics["f1_micro"] == pytest.approx(sklearn_metrics.f1_score(labels, predicted, average="micro"))
    assert metrics["f1_macro"] == pytest.approx(
        sklearn_metrics.f1_score(labels, predicted, average="macro", zero_division=0)
    )

    unit_logits = rng.normal(size=(3, 5, 2))
    unit_labels = rng.integers(0, 2, size=(3, 5))
    unit_labels[1, 3:] = -100  # padding of a shorter sequence
    metrics = compute_metrics(EvalPrediction(predictions=unit_logits, label_ids=unit_labels))
    keep = unit_labels != -100
    predicted, gold = unit_logits.argmax(-1)[keep], unit_labels[keep]
    assert metrics["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(gold, predicted))
    assert metrics["f1_macro"] == pytest.approx(sklearn_metrics.f1_score(gold, predicted, average="macro"))


def test_regression_is_unchanged_and_a_mismatch_names_the_way_out():
    predictions = np.array([[0.1], [0.5], [0.2], [0.9]])
    labels = np.array([0.0, 0.7, 0.1, 1.0])
    assert set(compute_metrics((predictions, labels))) == {
        "spearman",
        "pearson",
        "rmse",
        "spearman_ci_low",
        "spearman_ci_high",
    }
    with pytest.raises(ValueError, match="classification_metrics"):
        compute_metrics((np.zeros((4, 2)), np.array([0.5, 1.5, 0.2, 0.3])))


def test_trainer_evaluates_a_two_class_model(tiny_bert, tmp_path):
    texts = ["a good film", "a bad film", "truly good acting", "bad and boring", "good fun", "so bad"] * 2
    labels = [int("good" in text) for text in texts]
    processor = MetaEmbedProcessor.from_backbones([tiny_bert])
    dataset = MetaEmbedDataset(processor, texts, labels=labels)
    torch.manual_seed(0)
    model = MetaEmbedForSequenceClassification.from_backbones([tiny_bert], num_labels=2)
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_eval_batch_size=5, report_to="none", use_cpu=True, disable_tqdm=True
    )
    trainer = Trainer(
        model=model,
        args=args,
        eval_dataset=dataset,
        data_collator=MetaEmbedDataCollator(processor),
        compute_metrics=compute_metrics,
    )
    metrics = trainer.evaluate()
    predicted = trainer.predict(dataset).predictions.argmax(-1)
    assert metrics["eval_accuracy"] == pytest.approx(float(np.mean(predicted == np.array(labels))))
    assert {"eval_f1_macro", "eval_f1", "eval_precision", "eval_recall"} <= set(metrics)
