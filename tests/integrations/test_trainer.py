"""`Trainer` trains, evaluates, checkpoints, resumes and reloads the best MetaEmbed model with no extra glue."""

import json
import random

import pytest
import torch
from peft import get_peft_model
from safetensors.torch import load_file
from transformers import (
    AutoModelForSequenceClassification,
    AutoProcessor,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedForTokenClassification, MetaEmbedProcessor
from hf_metaembed.integrations.metrics import compute_metrics
from hf_metaembed.integrations.peft import lora_config
from hf_metaembed.integrations.trainer import (
    MetaEmbedDataCollator,
    MetaEmbedDataset,
    from_trainer_feature,
    to_trainer_features,
)

RESIDUES = "ACDEFGHIKLMNPQRSTVWY"


def _proteins(count: int, seed: int) -> tuple[list[str], list[float]]:
    """Random sequences whose label (hydrophobic fraction) the model can learn."""
    rng = random.Random(seed)
    sequences = ["".join(rng.choice(RESIDUES) for _ in range(rng.randint(4, 12))) for _ in range(count)]
    labels = [sum(r in "AILMFVW" for r in s) / len(s) * 4.0 for s in sequences]
    return sequences, labels


@pytest.fixture(scope="module")
def backbones(tiny_esm, tiny_prott5):
    return [tiny_esm, tiny_prott5]


@pytest.fixture(scope="module")
def processor(backbones):
    return MetaEmbedProcessor.from_backbones(backbones)


@pytest.fixture(scope="module")
def datasets(processor):
    train_sequences, train_labels = _proteins(16, seed=0)
    eval_sequences, eval_labels = _proteins(8, seed=1)
    train = MetaEmbedDataset(processor, train_sequences, labels=train_labels, name=[f"p{i}" for i in range(16)])
    dev = MetaEmbedDataset(processor, eval_sequences, labels=eval_labels)
    return train, dev


def _model(backbones, **kwargs):
    torch.manual_seed(0)
    return MetaEmbedForSequenceClassification.from_backbones(
        backbones, num_labels=1, problem_type="regression", head_dropout=0.0, **kwargs
    )


def _args(output_dir, **kwargs) -> TrainingArguments:
    settings = {
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "learning_rate": 0.01,
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": 0,
        "dataloader_num_workers": 0,
    }
    settings.update(kwargs)
    return TrainingArguments(output_dir=str(output_dir), **settings)


def _trainer(model, args, datasets, processor) -> Trainer:
    train, dev = datasets
    return Trainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=dev,
        data_collator=MetaEmbedDataCollator(processor),
        processing_class=processor,
        compute_metrics=compute_metrics,
    )


def test_dataset_items_use_forward_argument_names(processor, datasets):
    train, _ = datasets
    item = train[0]
    assert {"input_ids", "token_unit_index", "unit_mask", "segment_side_index", "labels", "name"} == set(item)
    assert len(item["input_ids"]) == 1 and len(item["input_ids"][0]) == 2  # 1 segment x 2 backbones
    # collating the forward-named samples gives exactly the processor's own batch
    sequences = ["MKTAYIAK", "GSH"]
    expected = processor(sequences)
    native = processor(sequences, return_tensors=None)
    batch = MetaEmbedDataCollator(processor)(to_trainer_features(native))
    assert set(batch) == set(expected)
    for key in expected:
        assert torch.equal(batch[key], expected[key])
    legacy = from_trainer_feature(to_trainer_features(native, labels=[1.0, 2.0])[0])
    assert legacy["labels"] == 1.0 and legacy["segments"][0]["input_ids"] == native["input_ids"][0][0]
    assert torch.equal(MetaEmbedDataCollator(processor)([legacy])["input_ids"], processor(sequences[:1])["input_ids"])


def test_collator_errors_name_the_sample_and_fix(processor):
    collator = MetaEmbedDataCollator(processor)
    # what Trainer's column removal leaves of the processor's own per-sample form
    with pytest.raises(ValueError, match="sample 0 lacks .*MetaEmbedDataset"):
        collator([{"labels": 1.0}])
    rows = to_trainer_features(processor(["MKT", "GSH"], return_tensors=None), labels=[1.0, 2.0])
    del rows[1]["labels"]
    with pytest.raises(ValueError, match=r"samples \[1\] of this batch have no label"):
        collator(rows)
    with pytest.raises(ValueError, match="3 labels for 2 samples"):
        to_trainer_features(processor(["MKT", "GSH"], return_tensors=None), labels=[1.0, 2.0, 3.0])


def test_train_evaluate_checkpoint_and_reload_best(backbones, processor, datasets, tmp_path):
    model = _model(backbones)
    args = _args(
        tmp_path,
        num_train_epochs=3,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model="rmse",
        greater_is_better=False,
    )
    trainer = _trainer(model, args, datasets, processor)
    assert trainer.label_names == ["labels"]
    before = trainer.evaluate()
    trainer.train()
    history = [entry for entry in trainer.state.log_history if "eval_rmse" in entry]
    assert len(history) == 3
    assert {"eval_loss", "eval_spearman", "eval_pearson", "eval_rmse"} <= set(history[0])
    best_rmse = min(entry["eval_rmse"] for entry in history)
    assert best_rmse < before["eval_rmse"]

    checkpoints = sorted(tmp_path.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    assert [path.name for path in checkpoints] == ["checkpoint-4", "checkpoint-8", "checkpoint-12"]
    for checkpoint in checkpoints:
        assert (checkpoint / "model.safetensors").is_file() and not (checkpoint / "pytorch_model.bin").exists()
        assert (checkpoint / "processor_config.json").is_file()  # the processor travels with every checkpoint
        assert "AutoModelForSequenceClassification" in json.loads((checkpoint / "config.json").read_text())["auto_map"]
    best = trainer.state.best_model_checkpoint
    assert best is not None and trainer.state.best_metric == pytest.approx(best_rmse)
    # load_best_model_at_end put the best checkpoint's weights back into the model
    # (frozen backbones never change; transformers writes ESM weights under legacy names, so compare the rest)
    saved = {k: v for k, v in load_file(f"{best}/model.safetensors").items() if ".backbone_" not in k}
    current = trainer.model.state_dict()
    assert saved and all(torch.equal(current[key], value) for key, value in saved.items())
    assert trainer.evaluate()["eval_rmse"] == pytest.approx(best_rmse, rel=1e-5)
    # predictions are the logits alone (fusion weights and pooled vectors stay out), one row per sample
    assert trainer.predict(datasets[1]).predictions.shape == (8, 1)

    # a checkpoint reloads through the Auto classes (model and processor)
    reloaded = AutoModelForSequenceClassification.from_pretrained(best).eval()
    reloaded_processor = AutoProcessor.from_pretrained(best)
    batch = reloaded_processor(["MKTAYIAK"])
    trainer.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, trainer.model(**batch).logits)


class StopAt(TrainerCallback):
    """Stops training after `step` steps, as an interrupted job would (the checkpoint of that step is written)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
        return control


def test_resume_continues_exactly(backbones, processor, datasets, tmp_path):
    straight_args = _args(tmp_path / "straight", max_steps=4, save_strategy="no")
    straight = _trainer(_model(backbones), straight_args, datasets, processor)
    straight.train()

    args = _args(tmp_path / "resumed", max_steps=4, save_strategy="steps", save_steps=2)
    interrupted = _trainer(_model(backbones), args, datasets, processor)
    interrupted.add_callback(StopAt(2))
    interrupted.train()
    assert interrupted.state.global_step == 2
    assert (tmp_path / "resumed" / "checkpoint-2" / "optimizer.pt").is_file()
    # a fresh model with other initial weights: everything must come from the checkpoint
    torch.manual_seed(123)
    fresh = MetaEmbedForSequenceClassification.from_backbones(
        backbones, num_labels=1, problem_type="regression", head_dropout=0.0
    )
    resumed = _trainer(fresh, args, datasets, processor)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 4
    expected = straight.model.state_dict()
    for key, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, expected[key], msg=f"{key} differs after resuming")


@pytest.mark.parametrize("remove_unused_columns", [True, False])
def test_unused_columns_either_way(backbones, processor, datasets, tmp_path, remove_unused_columns):
    args = _args(tmp_path, max_steps=1, save_strategy="no", remove_unused_columns=remove_unused_columns)
    trainer = _trainer(_model(backbones), args, datasets, processor)
    assert trainer.train().global_step == 1
    assert torch.isfinite(torch.tensor(trainer.evaluate()["eval_loss"]))


def test_processor_rows_train_with_default_column_removal(backbones, processor, tmp_path):
    sequences, labels = _proteins(8, seed=2)
    rows = to_trainer_features(processor(sequences, labels=labels, return_tensors=None))
    args = _args(tmp_path, max_steps=1, save_strategy="no")
    trainer = Trainer(
        model=_model(backbones), args=args, train_dataset=rows, data_collator=MetaEmbedDataCollator(processor)
    )
    assert trainer.train().global_step == 1
    # release 0.1's per-sample form keeps everything under "segments", which Trainer drops unless told not to
    legacy = [from_trainer_feature(row) for row in rows]
    args = _args(tmp_path, max_steps=1, save_strategy="no", remove_unused_columns=False)
    trainer = Trainer(
        model=_model(backbones), args=args, train_dataset=legacy, data_collator=MetaEmbedDataCollator(processor)
    )
    assert trainer.train().global_step == 1
    args = _args(tmp_path, max_steps=1, save_strategy="no")
    trainer = Trainer(
        model=_model(backbones), args=args, train_dataset=legacy, data_collator=MetaEmbedDataCollator(processor)
    )
    with pytest.raises(ValueError, match=r"return_tensors=None\), or MetaEmbedDataset"):
        trainer.train()


def test_backbone_free_checkpoints(backbones, processor, datasets, tmp_path):
    model = _model(backbones, save_backbone_weights=False)
    steps = {"save_strategy": "steps", "save_steps": 2, "eval_strategy": "steps", "eval_steps": 2}
    args = _args(tmp_path, max_steps=4, load_best_model_at_end=True, metric_for_best_model="loss", **steps)
    trainer = _trainer(model, args, datasets, processor)
    trainer.train()
    saved = load_file(str(tmp_path / "checkpoint-4" / "model.safetensors"))
    assert saved and not any("backbone_" in key for key in saved)
    assert trainer.state.best_model_checkpoint is not None


def test_token_classification(tiny_esm, tiny_prott5, tmp_path):
    processor = MetaEmbedProcessor.from_backbones([tiny_esm, tiny_prott5], per_unit_labels=True)
    sequences, _ = _proteins(8, seed=3)
    labels = [[int(r in "AILMFVW") for r in sequence] for sequence in sequences]
    dataset = MetaEmbedDataset(processor, sequences, labels=labels)
    torch.manual_seed(0)
    model = MetaEmbedForTokenClassification.from_backbones([tiny_esm, tiny_prott5], num_labels=2)

    def accuracy(prediction):
        predicted, gold = prediction.predictions.argmax(-1), prediction.label_ids
        keep = gold != -100
        return {"accuracy": float((predicted[keep] == gold[keep]).mean())}

    args = _args(tmp_path, max_steps=2, save_strategy="no", eval_strategy="no")
    collator = MetaEmbedDataCollator(processor)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator, compute_metrics=accuracy)
    trainer.train()
    predictions = trainer.predict(dataset)
    assert 0.0 <= predictions.metrics["test_accuracy"] <= 1.0
    # per-unit logits of every sample, padded across batches: one row per unit slot
    assert predictions.predictions.shape[:2] == (8, max(len(s) for s in sequences))


def test_trainer_with_lora(backbones, processor, datasets, tmp_path):
    model = _model(backbones)
    peft_model = get_peft_model(model, lora_config(model, r=2))
    args = _args(tmp_path, max_steps=2, save_strategy="steps", save_steps=2)
    trainer = _trainer(peft_model, args, datasets, processor)
    trainer.train()
    checkpoint = tmp_path / "checkpoint-2"
    assert (checkpoint / "adapter_model.safetensors").is_file()
    adapter = load_file(str(checkpoint / "adapter_model.safetensors"))
    assert any("lora_A" in key for key in adapter) and any("classifier" in key for key in adapter)
    assert not any("backbone_" in key and "lora_" not in key for key in adapter)
