"""Arguments shared by several `hf-metaembed` commands, declared without importing torch or transformers (so that
`--help` and argument errors answer at once): the settings of a new model built from `--backbones`, the processor
options error messages point to, the token budget, and the arguments of `embed` and `cache`.

Names of registered blocks are not `choices` here: the registries live in the model code (torch), and a block a user
registers from their own module must be accepted too. `check_block_names` checks them when the command runs.
"""

import argparse

from ..io.records import INPUT_FORMATS

# hf_metaembed.batching.DEFAULT_MAX_TOKENS, repeated so the parser needs no torch (tests/cli check that they agree)
DEFAULT_MAX_TOKENS = 2048

# --flag: (MetaEmbedConfig field, the registry query that lists its names); checked by `check_block_names`
BLOCK_FLAGS = {
    "--fusion": ("fusion", "list_fusions"),
    "--architecture": ("architecture", "list_architectures"),
    "--unit-encoder": ("unit_encoder", "list_unit_encoders"),
    "--pooling": ("pooling", "list_poolings"),
    "--head": ("head", "list_heads"),
    "--loss": ("loss", "list_losses"),
}
# MetaEmbedConfig settings a new model takes from the command line (the fields of the flags above, and these)
NEW_MODEL_SETTINGS = (
    "fusion",
    "level",
    "architecture",
    "preset",
    "unit_encoder",
    "pooling",
    "head",
    "layers",
    "layer_combine",
    "backbone_trust_remote_code",
)
# help of --backbone-trust-remote-code (new models and cache build)
TRUST_HELP = (
    "run the modelling code that backbones named in --backbones ship (an auto_map in their config.json); only for "
    "backbones you trust: without it such a backbone is refused at once. Its code is saved beside the model"
)
# `hf-metaembed train --lora` defaults without a preset (integrations.peft.lora_config's); a reference preset brings
# its own (modeling/presets.py PRESET_LORA)
LORA_DEFAULTS = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0}


def layer_argument(text: str) -> str | int | list[int]:
    """One backbone's layer on the command line: `last`, `mix`, `attention`, an index (`-2`), or a list of indices
    in brackets (`[-1,-2]`, combined by `--layer-combine`; `-1+-2` also works where argparse does not take it for a
    flag, e.g. after another value)."""
    if text in ("last", "mix", "attention"):
        return text
    listed = text.startswith("[") and text.endswith("]")
    parts = text[1:-1].split(",") if listed else text.split("+")
    try:
        indices = [int(part) for part in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid layer {text!r}: give last, mix, attention, an index such as -2, or a list such as [-1,-2]"
        ) from None
    return indices if listed or len(indices) > 1 else indices[0]


def add_new_model_arguments(parser: argparse.ArgumentParser, saved_model_note: str | None = None) -> None:
    """Settings of a model built from `--backbones` (MetaEmbedConfig fields; unset ones keep the config's defaults
    and the preset's)."""
    note = saved_model_note or "a saved --model keeps its own settings"
    group = parser.add_argument_group(f"new model (with --backbones; {note})")
    group.add_argument(
        "--fusion",
        help="fusion name: concat, mean, dme, cdme, attention, ... (default: dme; concat for one "
        "sentence-transformers backbone alone)",
    )
    group.add_argument(
        "--level",
        choices=["unit", "sequence"],
        help="fusion level (default: unit; sequence over sentence-transformers backbones only)",
    )
    group.add_argument(
        "--architecture", help="single, sc, ec, hp, pad, ... (default: single; complexes need a pair architecture)"
    )
    group.add_argument(
        "--preset",
        help="the study's reference settings in one flag: paper (its current training config: attention pooling, no "
        "ConvBERT), paper-2025-03-09 (its earlier config: ConvBERT, mean pooling), or v0.1 (release 0.1's modules)",
    )
    group.add_argument("--unit-encoder", help="none or convbert, ... (default: none)")
    group.add_argument(
        "--pooling", help="mean, max, attention, ... (default: the architecture's, attention for pairs)"
    )
    group.add_argument("--head", help="linear or mlp, ... (default: linear)")
    group.add_argument(
        "--layers",
        nargs="+",
        type=layer_argument,
        help="layer per backbone: last, an index, a list such as [-1,-2], mix or attention (default: last)",
    )
    group.add_argument("--layer-combine", choices=["mean", "concat"], help="how a list of layers combines (mean)")
    group.add_argument("--backbone-trust-remote-code", action="store_true", default=None, help=TRUST_HELP)
    group.add_argument(
        "--loss", help="regression loss: mse, list_mle, margin_ranking, ... (default: mse; also for a saved --model)"
    )
    group.add_argument(
        "--seed",
        type=int,
        default=42,
        help="random seed: a new model's initial weights, training's shuffling (default: 42)",
    )


def add_lora_arguments(parser: argparse.ArgumentParser) -> None:
    """`hf-metaembed train`: LoRA (or DoRA) adapters on the backbones, trained with fusion and head
    (`integrations.peft.lora_config`) and merged into the backbones before the model is saved."""
    group = parser.add_argument_group("adapters on the backbones (LoRA, DoRA; with a new or a saved model)")
    group.add_argument(
        "--lora",
        action="store_true",
        help="train LoRA adapters on each backbone's attention projections (its family's LoRA targets, e.g. query and "
        "value for ESM-2 and BERT, q and v for T5 encoders) with fusion and head; merged into the backbones when the "
        "model is saved",
    )
    group.add_argument(
        "--use-dora",
        action="store_true",
        help="DoRA adapters (weight-decomposed LoRA: a trained magnitude per output, LoRA on the direction); implies "
        "--lora",
    )
    group.add_argument(
        "--lora-r",
        type=int,
        help=f"adapter rank (default: {LORA_DEFAULTS['r']}; 16 with a reference preset, paper or paper-2025-03-09)",
    )
    group.add_argument(
        "--lora-alpha",
        type=int,
        help=f"adapter scale alpha (default: {LORA_DEFAULTS['lora_alpha']}; 32 with a reference preset)",
    )
    group.add_argument("--lora-dropout", type=float, help="dropout inside the adapters (default: 0)")


def add_processor_arguments(parser: argparse.ArgumentParser, truncation: bool = True) -> None:
    """The processor options that error messages suggest (`--unknown-residues x`, `--long-sequences window`)."""
    group = parser.add_argument_group("inputs the backbones cannot read as they are")
    group.add_argument(
        "--unknown-residues",
        choices=["error", "x"],
        help="characters that are not amino-acid letters in a protein: error (default), or x to read them as X "
        "(counted in a warning)",
    )
    group.add_argument(
        "--long-sequences",
        choices=["error", "window"],
        help="inputs longer than a backbone accepts: error (default, unless --truncation), or window to read them in "
        "sliding windows of --window-size units",
    )
    group.add_argument(
        "--window-size", type=int, help="with --long-sequences window: units per window (e.g. 1022 for ESM-2)"
    )
    group.add_argument("--window-overlap", type=int, help="units shared by consecutive windows (default: size // 4)")
    if truncation:
        group.add_argument("--truncation", action="store_true", help="cut sequences longer than a backbone accepts")


def max_tokens_argument(text: str) -> int | list[int]:
    """`--max-tokens`: one positive number (every backbone), or one per backbone joined by commas."""
    try:
        budgets = [int(part) for part in text.split(",")]
    except ValueError:
        budgets = []
    if not budgets or any(budget < 1 for budget in budgets):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a token budget: give one positive number, or one per backbone (e.g. 4096,2048)"
        )
    return budgets[0] if len(budgets) == 1 else budgets


def add_max_tokens_argument(parser: argparse.ArgumentParser, inputs: str) -> None:
    """`--max-tokens` (embed and cache build): the token budget `inputs` (records, segments) are batched within."""
    parser.add_argument(
        "--max-tokens",
        type=max_tokens_argument,
        default=DEFAULT_MAX_TOKENS,
        help=f"padded tokens per backbone pass, one number or one per backbone (a,b); {inputs} run longest first in "
        f"batches within this budget, which bounds peak memory (default: {DEFAULT_MAX_TOKENS})",
    )


def add_embed_arguments(parser: argparse.ArgumentParser) -> None:
    """The batching, output and device arguments of `hf-metaembed embed` (input, model and column arguments are the
    parser's, shared with the other commands); run with `embed.run_embed`."""
    add_max_tokens_argument(parser, "records")
    parser.add_argument("--batch-size", type=int, default=64, help="records per batch at most (default: 64)")
    parser.add_argument(
        "--shard-size", type=int, default=1000, help="records per output shard; bounds memory (default: 1000)"
    )
    parser.add_argument(
        "--autocast", choices=["fp32", "bf16", "fp16"], default="fp32", help="compute precision (default: fp32)"
    )
    parser.add_argument(
        "--fusion-weights", action="store_true", help="also store each unit's backbone weights (not with .npy)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="compute the output again, discarding a finished or partial run"
    )
    parser.add_argument(
        "--keep-shards", action="store_true", help="keep the shard folder (OUTPUT.shards/) after writing .npy/.npz"
    )
    parser.add_argument(
        "--max-batches", type=int, help="stop after this many batches (per process), keeping the results"
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")


CACHE_SUBCOMMANDS = ("build", "inspect")


def add_cache_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the arguments of `hf-metaembed cache build` to `parser`; run with `cache.run_cache_command`."""
    parser.add_argument("input", help="FASTA, text (one sequence per line), CSV, TSV or JSONL file; optionally .gz")
    parser.add_argument("output_dir", help="cache folder (resumed when it already holds this model's cache)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a MetaEmbed model folder saved with save_pretrained")
    source.add_argument(
        "--backbones", nargs="+", help="backbone Hub ids or local folders: A,B (or A B, the older spelling)"
    )
    parser.add_argument(
        "--layers",
        nargs="+",
        type=layer_argument,
        help="with --backbones: layer per backbone (last, an index, a list such as [-1,-2], mix or attention)",
    )
    parser.add_argument("--level", default="unit", choices=["unit", "sequence"], help="with --backbones")
    parser.add_argument(
        "--fusion",
        help="with --backbones: accepted so that one command line serves embed, build and cache; the cache holds "
        "the backbones' states before fusion, so the fusion does not change it",
    )
    parser.add_argument("--subword-pooling", default="mean", choices=["mean", "first"], help="with --backbones")
    parser.add_argument("--pooling", default="mean", help="with --backbones and --level sequence: mean or max")
    parser.add_argument("--dtype", help="with --backbones: load them in this torch dtype (e.g. float16)")
    parser.add_argument("--backbone-trust-remote-code", action="store_true", help="with --backbones: " + TRUST_HELP)
    parser.add_argument("--architecture", nargs="+", help="architecture(s) whose segments to cache (single, sc, ...)")
    parser.add_argument(
        "--input-format", choices=list(INPUT_FORMATS), help="input format (default: from the file suffix)"
    )
    parser.add_argument(
        "--column",
        "--sequence-column",
        dest="column",
        help="CSV column / JSONL field with plain sequences (default: sequence; --sequence-column is an alias)",
    )
    parser.add_argument(
        "--ligand-column",
        "--ligand-columns",
        dest="ligand_columns",
        nargs="+",
        help="column(s) holding the ligand chains, e.g. 'Ligand Sequences'",
    )
    parser.add_argument(
        "--receptor-column",
        "--receptor-columns",
        dest="receptor_columns",
        nargs="+",
        help="column(s) holding the receptor chains, e.g. 'Receptor Sequences'",
    )
    parser.add_argument("--chain-separator", default=",", help="separator of several chains in one cell (default: ,)")
    parser.add_argument("--batch-size", type=int, default=64, help="segments per backbone pass at most (default: 64)")
    add_max_tokens_argument(parser, "segments")
    parser.add_argument("--shard-size-mb", type=float, default=256.0, help="approximate size of each shard")
    parser.add_argument("--device", help="device to run the backbones on: cpu, cuda, cuda:1, ... (default: cpu)")
    parser.add_argument("--overwrite", action="store_true", help="replace a cache built for another model")
    parser.add_argument(
        "--lock-timeout",
        type=float,
        help="seconds to wait while another build writes to OUTPUT_DIR (0: fail at once; default: wait until free)",
    )
    return parser


def add_inspect_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the arguments of `hf-metaembed cache inspect` to `parser`; run with `cache.run_inspect_command`."""
    parser.add_argument("cache_dir", help="a cache folder built by `hf-metaembed cache build`")
    parser.add_argument("--verify", action="store_true", help="check every shard's sha256 against the index")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return parser


def with_default_cache_subcommand(argv: list[str]) -> list[str]:
    """`cache INPUT OUTPUT ...` (the form before `cache build` existed) as `cache build INPUT OUTPUT ...`."""
    if len(argv) >= 2 and argv[0] == "cache" and argv[1] not in (*CACHE_SUBCOMMANDS, "-h", "--help"):
        return ["cache", "build", *argv[1:]]
    return argv


def check_block_names(args: argparse.Namespace) -> None:
    """Check the block names given on the command line against the registries (imports the model code); an unknown
    name is a usage error naming the flag and listing the registered names."""
    import hf_metaembed

    from .errors import UsageError

    for flag, (field, query) in BLOCK_FLAGS.items():
        value = getattr(args, field, None)
        if not isinstance(value, str):
            continue
        names = getattr(hf_metaembed, query)()
        if value not in names:
            raise UsageError(f"{flag} {value}: unknown {field.replace('_', ' ')}; choose one of: {', '.join(names)}")
    preset = getattr(args, "preset", None)
    if preset is not None:
        from ..modeling.configuration_metaembed import PRESETS

        if preset not in PRESETS:
            raise UsageError(f"--preset {preset}: unknown preset; choose one of: {', '.join(PRESETS)}")


__all__ = [
    "BLOCK_FLAGS",
    "CACHE_SUBCOMMANDS",
    "DEFAULT_MAX_TOKENS",
    "LORA_DEFAULTS",
    "NEW_MODEL_SETTINGS",
    "TRUST_HELP",
    "add_cache_arguments",
    "add_embed_arguments",
    "add_inspect_arguments",
    "add_lora_arguments",
    "add_max_tokens_argument",
    "add_new_model_arguments",
    "add_processor_arguments",
    "check_block_names",
    "max_tokens_argument",
    "with_default_cache_subcommand",
]
