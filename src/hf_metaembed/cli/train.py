"""`hf-metaembed train` and `hf-metaembed evaluate`: fine-tune fusion and head (backbones frozen), or score a saved
model, on a labelled CSV, TSV or JSONL file with transformers' `Trainer`; metrics are printed as one JSON object.

Records are plain sequences (`--column`) or ligand-receptor complexes (`--ligand-column` and `--receptor-column`,
several chains in one cell split on `--chain-separator`), which need a pair architecture. Dissociation constants
become regression labels with `--label-transform` (a PPB-Affinity-format table is read by
`hf_metaembed.data.load_ppb_affinity`, the names of the transforms are `integrations.metrics.LABEL_TRANSFORMS`).

Labels are read strictly. A blank or NaN label is an error naming its records. The task is given (`--task`) or
inferred: regression when every label is a number and one is not an integer; classification when every label is an
integer, or when most labels are names; a column of numbers with a few names in it is an error naming them, never a
classifier over the typos. The task and the label set are printed (stderr) before training; classification labels
become the model's `label2id`, sorted.
"""

import contextlib
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..integrations.metrics import KD_UNITS, get_label_transform
from ..io.files import check_writable_output
from ..io.records import InputError, PairRecord, Record, detect_input_format, read_pair_records, read_records
from ..modeling.feature_rows import feature_rows
from ..modeling.modeling_metaembed import MetaEmbedForSequenceClassification
from ..modeling.pairing import PAIRINGS, list_architectures
from ..modeling.processing_metaembed import MetaEmbedProcessor
from .errors import EXIT_OK, UsageError, check_positive, one_line
from .loading import (
    batches,
    check_model_folder,
    encode,
    load_saved_model,
    progress,
    saved_architecture,
    torch_device,
)

# cells that mean "no value" in spreadsheets and pandas exports; a label never legitimately reads like this
MISSING_LABELS = {"", "nan", "-nan", "na", "n/a", "#n/a", "null", "none", "<na>"}
# settings of a model built from --backbones (MetaEmbedConfig fields of the same names)
NEW_MODEL_SETTINGS = ("fusion", "level", "architecture", "preset", "unit_encoder", "pooling", "head")


@dataclass
class LabelledData:
    """The records of a labelled file and their labels (as read, or KD turned into floats by `--label-transform`)."""

    name: str
    records: list[Record] | list[PairRecord]
    labels: list
    transformed: bool = False

    @property
    def pairs(self) -> bool:
        return bool(self.records) and isinstance(self.records[0], PairRecord)


# ---------------------------------------------------------------------------------------------- reading


def _pair_columns(args) -> tuple[str, str] | None:
    if (args.ligand_column is None) != (args.receptor_column is None):
        given = "--ligand-column" if args.ligand_column is not None else "--receptor-column"
        raise UsageError(f"{given} alone: complexes need both --ligand-column and --receptor-column")
    return (args.ligand_column, args.receptor_column) if args.ligand_column is not None else None


def _read_labelled(args, path: str) -> LabelledData:
    """Every record of a labelled file (training data is held in memory) with its label."""
    name = Path(path).name
    input_format = detect_input_format(path, args.input_format)
    if input_format in ("fasta", "text"):
        raise InputError(f"{name}: {input_format} files carry no labels; use CSV, TSV or JSONL")
    if args.label_transform and args.kd_unit not in KD_UNITS:
        raise UsageError(f"unknown --kd-unit {args.kd_unit!r}; choose one of: {', '.join(KD_UNITS)}")
    pairs = _pair_columns(args)
    if pairs and args.label_transform:
        return _read_affinity_table(args, path, pairs)
    if args.min_chain_length or args.duplicates != "keep":
        raise UsageError("--min-chain-length and --duplicates curate complexes with KD labels: add --label-transform")
    if pairs:
        records = read_pair_records(
            path,
            input_format,
            ligand_columns=[pairs[0]],
            receptor_columns=[pairs[1]],
            chain_separator=args.chain_separator,
            id_column=args.id_column,
            extra_columns=[args.label_column],
        )
    else:
        records = read_records(path, input_format, args.column, args.id_column, [args.label_column])
    records = list(records)
    if not records:
        raise InputError(f"{name} holds no records")
    labels = [record.fields[args.label_column] for record in records]
    if args.label_transform:
        return LabelledData(name, records, _kd_labels(args, name, records, labels), transformed=True)
    return LabelledData(name, records, labels)


def _read_affinity_table(args, path: str, columns: tuple[str, str]) -> LabelledData:
    """Complexes with KD labels through the PPB-Affinity loader (its row checks, its optional curation)."""
    from ..data.ppb_affinity import load_ppb_affinity

    try:
        dataset = load_ppb_affinity(
            path,
            ligand_column=columns[0],
            receptor_column=columns[1],
            label_column=args.label_column,
            pdb_column=None,
            split_column=None,
            chain_separator=args.chain_separator,
            label_transform=args.label_transform,
            kd_unit=args.kd_unit,
            min_chain_length=args.min_chain_length,
            duplicates=args.duplicates,
        )
    except ValueError as error:  # a bad row (named), a missing column, an unknown rule
        raise InputError(one_line(error)) from None
    report = dataset.report
    if report.dropped or report.duplicate_groups:
        print(f"hf-metaembed: curation of {report}", file=sys.stderr)
    if not dataset.records:
        raise InputError(f"{Path(path).name}: no complex is left after curation; see the report above")
    records = [PairRecord(record.row, str(record.row), record.ligand, record.receptor) for record in dataset]
    return LabelledData(Path(path).name, records, [record.label for record in dataset], transformed=True)


def _kd_labels(args, name: str, records: list, values: list) -> list[float]:
    """Labels of single sequences whose label column holds dissociation constants."""
    transform = get_label_transform(args.label_transform)
    labels = []
    for record, value in zip(records, values):
        kd = _as_number(value)
        if kd is None or kd <= 0:
            raise InputError(
                f"{name} {_describe(record)}: {args.label_column!r} is {value!r}, not a positive KD in "
                f"{args.kd_unit}; fix or drop the row"
            )
        labels.append(float(transform(kd, args.kd_unit)))
    return labels


# ---------------------------------------------------------------------------------------------- labels


def _is_missing(value) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return isinstance(value, str) and value.strip().lower() in MISSING_LABELS


def _as_number(value) -> float | None:
    """`value` as a finite float, or None when it is not one (a JSON boolean is not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _describe(record) -> str:
    same = record.id == str(record.index)
    return f"record {record.index}" + ("" if same else f" (id {record.id!r})")


def _label_error(data: LabelledData, indices: list[int], column: str, problem: tuple[str, str], fix: str):
    """An `InputError` naming the records whose labels have `problem` (singular and plural wording) and the fix."""
    if len(indices) == 1:
        index = indices[0]
        return InputError(
            f"{data.name} {_describe(data.records[index])}, column {column!r}: label {data.labels[index]!r} "
            f"{problem[0]}; {fix}"
        )
    shown = ", ".join(f"{_describe(data.records[i])} ({data.labels[i]!r})" for i in indices[:10])
    shown += f" and {len(indices) - 10} more" if len(indices) > 10 else ""
    return InputError(
        f"{data.name}: {len(indices)} of {len(data.labels)} labels in column {column!r} {problem[1]}: {shown}; {fix}"
    )


def _check_no_missing(data: LabelledData, column: str) -> None:
    missing = [i for i, value in enumerate(data.labels) if _is_missing(value)]
    if missing:
        problem = ("is blank or NaN", "are blank or NaN")
        raise _label_error(data, missing, column, problem, "fill in the label or drop the row")


NOT_A_NUMBER = ("is not a number", "are not numbers")


def _infer_task(data: LabelledData, requested: str, column: str) -> tuple[str, str]:
    """`(task, why)`: the task to train, and how it was chosen (for the line printed before training)."""
    if data.transformed:
        if requested == "classification":
            raise UsageError("--label-transform turns KD into regression labels: drop --task classification")
        return "regression", "KD labels through --label-transform"
    _check_no_missing(data, column)
    numbers = [_as_number(value) for value in data.labels]
    not_numbers = [i for i, number in enumerate(numbers) if number is None]
    if requested == "regression":
        if not_numbers:
            fix = "fix the label, or pass --task classification if the labels are class names"
            raise _label_error(data, not_numbers, column, NOT_A_NUMBER, fix)
        return "regression", "--task regression"
    if requested == "classification":
        return "classification", "--task classification"
    if not not_numbers:
        if any(number != int(number) for number in numbers):
            return "regression", "inferred: every label is a number, not all integers"
        return "classification", "inferred: every label is an integer; pass --task regression to predict numbers"
    if len(not_numbers) < len(numbers) - len(not_numbers):
        fix = (
            f"the other {len(numbers) - len(not_numbers)} labels are numbers: fix or drop those rows, or pass "
            "--task classification to read every label as a class name"
        )
        raise _label_error(data, not_numbers, column, NOT_A_NUMBER, fix)
    return "classification", "inferred: the labels are names"


def _class_names(labels: list) -> list[str]:
    """The distinct labels as class names: numbers in numeric order, then names in alphabetical order."""
    names = {str(value) for value in labels}
    return sorted(names, key=lambda name: (_as_number(name) is None, _as_number(name) or 0.0, name))


def _announce(command: str, task: str, why: str, data: LabelledData, names: list[str] | None) -> None:
    """Print the task and the label set to stderr (stdout holds only the metrics)."""
    if task == "classification":
        shown = ", ".join(repr(name) for name in names[:20]) + (", ..." if len(names) > 20 else "")
        detail = f"{len(names)} labels: {shown}"
    else:
        values = [float(value) for value in data.labels]
        detail = (
            f"{len(values)} labels from {min(values):.4g} to {max(values):.4g} (mean {sum(values) / len(values):.4g})"
        )
    print(f"hf-metaembed {command}: task {task} ({why}); {detail}", file=sys.stderr)


def _encode_labels(data: LabelledData, task: str, label2id: dict | None, column: str) -> list:
    """Labels as the model's targets: floats (regression) or class ids (classification), strictly checked."""
    if not data.transformed:
        _check_no_missing(data, column)
    if task == "regression":
        numbers = [value if data.transformed else _as_number(value) for value in data.labels]
        bad = [i for i, number in enumerate(numbers) if number is None]
        if bad:
            raise _label_error(data, bad, column, NOT_A_NUMBER, "a regression model needs a number in every row")
        return [float(number) for number in numbers]
    unknown = [i for i, value in enumerate(data.labels) if str(value) not in label2id]
    if unknown:
        problem = ("is not one of the model's labels", "are not among the model's labels")
        raise _label_error(data, unknown, column, problem, f"the model knows {sorted(label2id)}")
    return [label2id[str(value)] for value in data.labels]


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


def _model_settings(args) -> dict:
    """MetaEmbedConfig settings given on the command line (only those given, so the config's defaults and the
    preset decide the rest)."""
    settings = {name: getattr(args, name) for name in NEW_MODEL_SETTINGS if getattr(args, name) is not None}
    if args.model and settings:
        flags = ", ".join("--" + name.replace("_", "-") for name in settings)
        raise UsageError(
            f"{flags} set up a new model from --backbones; the saved model {args.model!r} keeps its own settings: "
            f"drop {flags}"
        )
    architecture = settings.get("architecture")
    if architecture is not None and architecture not in list_architectures():
        raise UsageError(f"unknown architecture {architecture!r}; choose one of: {', '.join(list_architectures())}")
    if args.loss is not None:
        settings["loss"] = args.loss
    return settings


def _new_or_saved_classifier(args, settings: dict, task: str, class_names: list[str] | None):
    """The model and processor to train (the processor laid out for the model's architecture); `settings` from
    `_model_settings`."""
    problem_type = "regression" if task == "regression" else "single_label_classification"
    label_kwargs: dict = {"num_labels": 1, "problem_type": problem_type}
    if task == "classification":
        label_kwargs.update(
            num_labels=len(class_names),
            id2label=dict(enumerate(class_names)),
            label2id={name: index for index, name in enumerate(class_names)},
        )
    if args.backbones:
        backbones = [name.strip() for name in args.backbones.split(",") if name.strip()]
        if not backbones:
            raise UsageError("--backbones needs at least one backbone folder or Hub id")
        try:
            model = MetaEmbedForSequenceClassification.from_backbones(backbones, **settings, **label_kwargs)
        except (OSError, ValueError) as error:
            raise UsageError(one_line(error)) from None
        processor = MetaEmbedProcessor.from_backbones(backbones, architecture=model.config.architecture)
        return model, processor
    model, processor = load_saved_model(
        args.model, MetaEmbedForSequenceClassification, ignore_mismatched_sizes=True, **settings, **label_kwargs
    )
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
                truncation=args.truncation or None,
                return_tensors=None,
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
    settings = _model_settings(args)
    pairs = _pair_columns(args) is not None
    if args.backbones:
        _check_layout(settings.get("architecture", "single"), pairs, "the new model has")
    else:
        _check_layout(saved_architecture(check_model_folder(args.model)), pairs, f"the model in {args.model!r} has")
    output_dir = check_writable_output(args.output_dir)
    data = _read_labelled(args, args.data)
    eval_data = _read_labelled(args, args.eval_data) if args.eval_data else None
    task, why = _infer_task(data, args.task, args.label_column)
    class_names = _class_names(data.labels) if task == "classification" else None
    if task == "classification" and len(class_names) < 2:
        raise UsageError(f"{data.name}: every label is {class_names[0]!r}; classification needs two or more")
    _announce("train", task, why, data, class_names)
    from transformers import set_seed

    set_seed(args.seed)
    model, processor = _new_or_saved_classifier(args, settings, task, class_names)
    label2id = model.config.label2id if task == "classification" else None
    train_features = _features(processor, data, _encode_labels(data, task, label2id, args.label_column), args)
    eval_features = None
    if eval_data is not None:
        eval_labels = _encode_labels(eval_data, task, label2id, args.label_column)
        eval_features = _features(processor, eval_data, eval_labels, args)
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
    _check_layout(saved_architecture(folder), _pair_columns(args) is not None, f"the model in {args.model!r} has")
    data = _read_labelled(args, args.data)
    model, processor = load_saved_model(folder, MetaEmbedForSequenceClassification)
    processor.architecture = model.config.architecture
    task = args.task
    if task == "auto":
        regression = model.config.problem_type == "regression" or model.config.num_labels == 1
        task = "regression" if regression else "classification"
    if data.transformed and task == "classification":
        raise UsageError("--label-transform turns KD into regression labels, but this model classifies")
    label2id = {str(k): int(v) for k, v in (model.config.label2id or {}).items()} if task == "classification" else None
    labels = _encode_labels(data, task, label2id, args.label_column)
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
