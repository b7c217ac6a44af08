"""`hf-metaembed train` and `hf-metaembed evaluate`: fine-tune fusion and head (backbones frozen, or adapted with LoRA
or DoRA: `adapters.py`), or score a saved model, on a labelled CSV, TSV or JSONL file with transformers' `Trainer`;
metrics are printed as one JSON object.

The file is read by `labelled_files` (plain sequences or ligand-receptor complexes, KD labels through
`--label-transform`, whose names are `integrations.metrics.LABEL_TRANSFORMS`); its labels are checked, and the task
inferred, by `labels`. The task and the label set are printed (stderr) before training.
"""

import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

from ..io.files import check_writable_output
from ..modeling.feature_rows import feature_rows
from ..modeling.modeling_metaembed import MetaEmbedForSequenceClassification
from ..modeling.pairing import PAIRINGS, list_architectures
from .adapters import adapter_report, add_adapters, lora_settings, merge_adapters
from .errors import EXIT_OK, UsageError, check_positive
from .labelled_files import pair_columns, read_labelled
from .labels import LabelledData, announce, encode_labels, infer_task, sorted_class_names
from .loading import (
    batches,
    build_from_backbones,
    check_model_folder,
    check_window_policy,
    encode,
    load_saved_model,
    model_settings,
    processor_options,
    progress,
    saved_architecture,
    torch_device,
    window_settings,
)

# ---------------------------------------------------------------------------------------------- model and features


def _is_pair(architecture: str) -> bool:
    return PAIRINGS.get_class(architecture).is_pair


def _check_layout(architecture: str, pairs: bool, owner: str) -> None:
    """Complexes need a pair architecture and plain sequences a single one."""
    if pairs and not _is_pair(architecture):
        pair_names = ", ".join(name for name in list_architectures() if _is_pair(name))
        raise UsageError(
            f"the data holds complexes (--ligand-column, --receptor-column) but {owner} architecture "
            f"{architecture!r}, which reads single sequences; choose a pair architecture ({pair_names})"
            + (" with --architecture" if owner == "the new model has" else "")
        )
    if not pairs and _is_pair(architecture):
        raise UsageError(
            f"{owner} architecture {architecture!r}, which pairs ligand and receptor chains: name their columns "
            "with --ligand-column and --receptor-column"
        )


def _new_or_saved_classifier(args, settings: dict, task: str, class_names: list[str] | None):
    """The model and processor to train (the processor laid out for the model's architecture); `settings` from
    `model_settings`."""
    problem_type = "regression" if task == "regression" else "single_label_classification"
    label_kwargs: dict = {"num_labels": 1, "problem_type": problem_type}
    if task == "classification":
        label_kwargs.update(
            num_labels=len(class_names),
            id2label=dict(enumerate(class_names)),
            label2id={name: index for index, name in enumerate(class_names)},
        )
    if args.backbones:
        return build_from_backbones(args, MetaEmbedForSequenceClassification, **label_kwargs)
    model, processor = load_saved_model(
        args.model, MetaEmbedForSequenceClassification, ignore_mismatched_sizes=True, **settings, **label_kwargs
    )
    check_window_policy(model.config, args)
    processor.architecture = model.config.architecture
    return model, processor


def _features(processor, data: LabelledData, labels: list, args) -> list[dict]:
    side_columns = {"ligand": args.ligand_column, "receptor": args.receptor_column}
    features = []
    with progress(len(data.records), "tokenizing", args.no_progress) as bar:
        for batch in batches(list(zip(data.records, labels)), 256):
            encoded = encode(
                processor,
                [record for record, _ in batch],
                side_columns=side_columns,
                return_tensors=None,
                **processor_options(args),
            )
            for feature, (_, label) in zip(feature_rows(encoded), batch):
                feature["labels"] = label
                features.append(feature)
            bar.update(len(batch))
    return features


def _metrics_function(task: str):
    """The `compute_metrics` Trainer reports for `task`: accuracy and macro F1, or Spearman (with its bootstrap
    interval), Pearson and RMSE."""
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


# ---------------------------------------------------------------------------------------------- commands


def run_train(args) -> int:
    """`hf-metaembed train`: fine-tune fusion and head (backbones frozen) with transformers' Trainer."""
    check_positive(args.batch_size, "--batch-size")
    torch_device(args.device)  # a device this torch cannot use is reported before any data is read
    settings = model_settings(args)
    lora = lora_settings(args)  # adapter flags checked before any data is read
    pairs = pair_columns(args) is not None
    if args.backbones:
        _check_layout(settings.get("architecture", "single"), pairs, "the new model has")
    else:
        _check_layout(saved_architecture(check_model_folder(args.model)), pairs, f"the model in {args.model!r} has")
    output_dir = _check_output_dir(args)
    data = read_labelled(args, args.data)
    eval_data = read_labelled(args, args.eval_data) if args.eval_data else None
    task, why = infer_task(data, args.task, args.label_column)
    class_names = sorted_class_names(data.labels) if task == "classification" else None
    if task == "classification" and len(class_names) < 2:
        raise UsageError(f"{data.name}: every label is {class_names[0]!r}; classification needs two or more")
    announce("train", task, why, data, class_names)
    from transformers import set_seed

    set_seed(args.seed)
    model, processor = _new_or_saved_classifier(args, settings, task, class_names)
    label2id = model.config.label2id if task == "classification" else None
    train_features = _features(processor, data, encode_labels(data, task, label2id, args.label_column), args)
    eval_features = None
    if eval_data is not None:
        eval_labels = encode_labels(eval_data, task, label2id, args.label_column)
        eval_features = _features(processor, eval_data, eval_labels, args)
    if lora is not None:
        model = add_adapters(model, lora)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        metrics = _fit(args, model, processor, train_features, eval_features, task, scratch)
    if lora is not None:  # saved as a plain MetaEmbed model: the adapters merged into the backbone weights
        metrics["adapters"] = adapter_report(model, lora)
        model = merge_adapters(model)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(output_dir))
    processor.save_pretrained(str(output_dir))
    metrics.update(task=task, seconds=round(time.perf_counter() - started, 2), model=str(output_dir))
    print(json.dumps(metrics, sort_keys=True))
    return EXIT_OK


def _check_output_dir(args):
    """`--output-dir`, writable, and holding no saved model unless `--overwrite` (training never replaces a model,
    least of all the one it starts from, without being told)."""
    output_dir = check_writable_output(args.output_dir)
    if args.overwrite or not (output_dir / "config.json").is_file():
        return output_dir
    if args.model and output_dir.resolve() == Path(args.model).resolve():
        raise UsageError(
            f"--output-dir {args.output_dir} is the --model folder: the trained model would replace the one it "
            "starts from; choose another --output-dir, or pass --overwrite to replace it"
        )
    raise UsageError(
        f"--output-dir {args.output_dir} already holds a saved model; choose another folder, or pass --overwrite to "
        "replace it"
    )


def _fit(args, model, processor, train_features, eval_features, task: str, scratch: str) -> dict:
    from ..integrations.trainer import MetaEmbedTrainer  # evaluates in token-budget batches, longest first

    # Trainer's output folder only receives scratch files here: the model is saved to --output-dir afterwards
    trainer = MetaEmbedTrainer(
        model=model,
        args=_training_arguments_for(args, scratch, eval_features is not None),
        train_dataset=train_features,
        eval_dataset=eval_features,
        data_collator=processor.pad,
        compute_metrics=_metrics_function(task),
    )
    if args.no_progress:  # without bars Trainer prints every log dict instead: --no-progress means neither
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
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
    torch_device(args.device)
    folder = check_model_folder(args.model)  # before the data is read: a wrong folder is reported at once
    _check_layout(saved_architecture(folder), pair_columns(args) is not None, f"the model in {args.model!r} has")
    data = read_labelled(args, args.data)
    model, processor = load_saved_model(folder, MetaEmbedForSequenceClassification, **window_settings(args))
    check_window_policy(model.config, args)
    processor.architecture = model.config.architecture
    task = args.task
    if task == "auto":
        regression = model.config.problem_type == "regression" or model.config.num_labels == 1
        task = "regression" if regression else "classification"
    if data.transformed and task == "classification":
        raise UsageError("--label-transform turns KD into regression labels, but this model classifies")
    label2id = {str(k): int(v) for k, v in (model.config.label2id or {}).items()} if task == "classification" else None
    if task == "regression" and model.config.num_labels != 1:
        raise UsageError(
            f"the model in {args.model!r} predicts {model.config.num_labels} numbers per record (num_labels="
            f"{model.config.num_labels}, problem_type {model.config.problem_type!r}) but column "
            f"{args.label_column!r} holds one label per record; evaluate a model with one output, or pass --task "
            "classification if its outputs are classes"
        )
    labels = encode_labels(data, task, label2id, args.label_column)
    features = _features(processor, data, labels, args)
    with tempfile.TemporaryDirectory() as scratch:
        return _predict_and_print(args, model, processor, features, task, scratch)


def _predict_and_print(args, model, processor, features: list[dict], task: str, scratch: str) -> int:
    from ..integrations.trainer import MetaEmbedTrainer  # predicts in token-budget batches, longest first

    trainer = MetaEmbedTrainer(
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
