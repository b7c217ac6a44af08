"""`hf-metaembed train` and `hf-metaembed evaluate`: fine-tune fusion and head (backbones frozen), or score a saved
model, on a labelled CSV, TSV or JSONL file with transformers' `Trainer`; metrics are printed as one JSON object.

The task is classification or regression: given (`--task`), or inferred from the labels (regression when every label
is a number that is not an integer). Classification labels become the model's `label2id`, sorted.
"""

import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

from ..io.files import check_writable_output
from ..io.records import InputError, detect_input_format, read_records
from .errors import EXIT_OK, UsageError, check_positive, one_line
from .loading import batches, check_model_folder, encode, load_saved_model, progress, torch_device


def _read_labelled(args, path: str) -> tuple[list, list[str]]:
    """All records of a labelled file (training data is held in memory) and their raw labels."""
    input_format = detect_input_format(path, args.input_format)
    if input_format in ("fasta", "text"):
        raise InputError(f"{Path(path).name}: {input_format} files carry no labels; use CSV, TSV or JSONL")
    records = list(read_records(path, input_format, args.column, args.id_column, [args.label_column]))
    if not records:
        raise InputError(f"{Path(path).name} holds no records")
    return records, [record.fields[args.label_column] for record in records]


def _is_number(value) -> bool:
    try:
        return value is not None and str(value).strip() != "" and float(value) == float(value)
    except (TypeError, ValueError):
        return False


def _infer_task(labels: list, task: str) -> str:
    if task != "auto":
        return task
    if all(_is_number(v) for v in labels) and any(float(v) != int(float(v)) for v in labels):
        return "regression"
    return "classification"


def _encode_labels(records: list, labels: list, task: str, label2id: dict | None, name: str) -> list:
    encoded = []
    for record, value in zip(records, labels):
        if task == "regression":
            if not _is_number(value) or abs(float(value)) == float("inf"):
                raise InputError(f"{name} record {record.index} (id {record.id!r}): label {value!r} is not a number")
            encoded.append(float(value))
        else:
            key = str(value)
            if key not in label2id:
                raise InputError(
                    f"{name} record {record.index} (id {record.id!r}): label {key!r} is not one of the model's "
                    f"labels {sorted(label2id)}"
                )
            encoded.append(label2id[key])
    return encoded


def _features(processor, records: list, labels: list, truncation: bool, progress_disabled: bool) -> list[dict]:
    features = []
    with progress(len(records), "tokenizing", progress_disabled) as bar:
        for batch in batches(list(zip(records, labels)), 256):
            encoded = encode(processor, [r for r, _ in batch], truncation=truncation or None, return_tensors=None)
            for feature, (_, label) in zip(encoded, batch):
                feature["labels"] = label
                features.append(feature)
            bar.update(len(batch))
    return features


def _metrics_function(task: str):
    """The `compute_metrics` Trainer reports for `task`: accuracy and macro F1, or Spearman, Pearson and RMSE."""
    from ..integrations.metrics import classification_metrics, compute_metrics

    return classification_metrics if task == "classification" else compute_metrics


def _training_arguments_for(args, output_dir: str, evaluate_each_epoch: bool):
    from transformers import TrainingArguments

    device = torch_device(args.device)
    return TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        num_train_epochs=getattr(args, "epochs", 1.0),
        learning_rate=getattr(args, "learning_rate", 1e-3),
        weight_decay=getattr(args, "weight_decay", 0.0),
        seed=getattr(args, "seed", 42),
        eval_strategy="epoch" if evaluate_each_epoch else "no",
        save_strategy="no",
        logging_strategy="epoch",
        report_to="none",
        remove_unused_columns=False,
        disable_tqdm=args.no_progress,
        use_cpu=device.type == "cpu",
        dataloader_num_workers=0,
    )


def _new_or_saved_classifier(args, task: str, raw_labels: list):
    """The model and processor to train, and its label map (None for regression)."""
    from ..modeling.modeling_metaembed import MetaEmbedForSequenceClassification
    from ..modeling.processing_metaembed import MetaEmbedProcessor

    problem_type = "regression" if task == "regression" else "single_label_classification"
    label_kwargs: dict = {"num_labels": 1, "problem_type": problem_type}
    if task == "classification":
        names = sorted(
            {str(v) for v in raw_labels}, key=lambda v: (not _is_number(v), float(v) if _is_number(v) else 0, v)
        )
        label_kwargs.update(
            num_labels=len(names),
            id2label=dict(enumerate(names)),
            label2id={name: index for index, name in enumerate(names)},
        )
    if args.backbones:
        backbones = [name.strip() for name in args.backbones.split(",") if name.strip()]
        if not backbones:
            raise UsageError("--backbones needs at least one backbone folder or Hub id")
        try:
            model = MetaEmbedForSequenceClassification.from_backbones(
                backbones, fusion=args.fusion, level=args.level, head=args.head, **label_kwargs
            )
        except (OSError, ValueError) as error:
            raise UsageError(one_line(error)) from None
        return model, MetaEmbedProcessor.from_backbones(backbones), label_kwargs.get("label2id")
    model, processor = load_saved_model(
        args.model, MetaEmbedForSequenceClassification, ignore_mismatched_sizes=True, **label_kwargs
    )
    return model, processor, label_kwargs.get("label2id")


def run_train(args) -> int:
    """`hf-metaembed train`: fine-tune fusion and head (backbones frozen) with transformers' Trainer."""
    check_positive(args.batch_size, "--batch-size")
    records, raw_labels = _read_labelled(args, args.data)
    eval_records, eval_raw = _read_labelled(args, args.eval_data) if args.eval_data else ([], [])
    output_dir = Path(args.output_dir)
    check_writable_output(output_dir)
    task = _infer_task(raw_labels, args.task)
    if task == "classification" and len({str(v) for v in raw_labels}) < 2:
        raise UsageError(f"{Path(args.data).name}: every label is {raw_labels[0]!r}; classification needs two or more")
    from transformers import set_seed

    set_seed(args.seed)
    model, processor, label2id = _new_or_saved_classifier(args, task, raw_labels)
    train_features = _features(
        processor,
        records,
        _encode_labels(records, raw_labels, task, label2id, Path(args.data).name),
        args.truncation,
        args.no_progress,
    )
    eval_features = None
    if eval_records:
        eval_labels = _encode_labels(eval_records, eval_raw, task, label2id, Path(args.eval_data).name)
        eval_features = _features(processor, eval_records, eval_labels, args.truncation, args.no_progress)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        metrics = _fit(args, model, processor, train_features, eval_features, task, scratch)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(output_dir))
    processor.save_pretrained(str(output_dir))
    metrics.update(task=task, seconds=round(time.perf_counter() - started, 2), model=str(output_dir))
    print(json.dumps(metrics, sort_keys=True))
    return EXIT_OK


def _fit(args, model, processor, train_features, eval_features, task: str, scratch: str) -> dict:
    from transformers import Trainer

    # Trainer's output folder only receives scratch files here: the model is saved to --output-dir afterwards
    trainer = Trainer(
        model=model,
        args=_training_arguments_for(args, scratch, eval_features is not None),
        train_dataset=train_features,
        eval_dataset=eval_features,
        data_collator=processor.pad,
        compute_metrics=_metrics_function(task),
    )
    with contextlib.redirect_stdout(sys.stderr):
        result = trainer.train()
        metrics = {"train_loss": result.training_loss, "train_records": len(train_features)}
        if eval_features is not None:
            evaluation = trainer.evaluate()
            metrics.update(_clean_metrics(evaluation, "eval_"))
    return metrics


def _clean_metrics(metrics: dict, prefix: str) -> dict:
    """Trainer metrics without their prefix and without timing entries."""
    timing = ("_per_second", "runtime", "preparation_time")
    return {key.removeprefix(prefix): value for key, value in metrics.items() if not key.endswith(timing)}


def run_evaluate(args) -> int:
    """`hf-metaembed evaluate`: JSON metrics of a saved model on a labelled file."""
    check_positive(args.batch_size, "--batch-size")
    folder = check_model_folder(args.model)  # before the data is read: a wrong folder is reported at once
    records, raw_labels = _read_labelled(args, args.data)
    from ..modeling.modeling_metaembed import MetaEmbedForSequenceClassification

    model, processor = load_saved_model(folder, MetaEmbedForSequenceClassification)
    task = args.task
    if task == "auto":
        task = "regression" if model.config.problem_type == "regression" or model.config.num_labels == 1 else None
        task = task or "classification"
    label2id = {str(k): int(v) for k, v in (model.config.label2id or {}).items()} if task == "classification" else None
    labels = _encode_labels(records, raw_labels, task, label2id, Path(args.data).name)
    features = _features(processor, records, labels, args.truncation, args.no_progress)
    with tempfile.TemporaryDirectory() as scratch:
        return _predict_and_print(args, model, processor, features, task, scratch)


def _predict_and_print(args, model, processor, features: list[dict], task: str, scratch: str) -> int:
    from transformers import Trainer

    trainer = Trainer(
        model=model,
        args=_training_arguments_for(args, scratch, False),
        data_collator=processor.pad,
        compute_metrics=_metrics_function(task),
    )
    with contextlib.redirect_stdout(sys.stderr):
        prediction = trainer.predict(features)
    metrics = _clean_metrics(prediction.metrics, "test_")
    metrics.update(task=task, records=len(features))
    print(json.dumps(metrics, sort_keys=True))
    return EXIT_OK
