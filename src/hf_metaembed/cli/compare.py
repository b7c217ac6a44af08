"""`hf-metaembed compare`: does fusing help on this data, and with which fusion? Every cell of a grid (each backbone
alone, every fusion over all of them, optionally every subset, crossed with layers, poolings and pair architectures)
trained on one feature cache with the same splits, seeds and budget; the result table on stdout, CSV, JSON and a
plot in `--output-dir` (`hf_metaembed.compare`).

This module imports only the standard library until the command runs, so building the parser stays light.
"""

import argparse
import sys

COMPARE_DESCRIPTION = (
    "Compare each backbone alone with every chosen fusion of them on a labelled CSV, TSV or JSONL file. Each\n"
    "backbone runs once (into the feature cache in OUTPUT_DIR/feature_cache); every cell trains fusion and head on\n"
    "the cached states with the same splits (k-fold, a split column, or identity-clustered), seeds and budget,\n"
    "stopping early on the validation part only. Prints a Markdown table (best cell marked; per cell the metric's\n"
    "mean over seeds with a 95% bootstrap interval over test items and the spread over seeds; per fusion the\n"
    "paired difference to the best single backbone with its interval and permutation p-value) and writes\n"
    "cells.csv, runs.csv, results.json and comparison.png to OUTPUT_DIR. Every finished run is written at once:\n"
    "rerunning the same command after an interruption continues where it stopped."
)


def _names(values: list[str] | None) -> list[str] | None:
    """`a,b c` -> `[a, b, c]` (lists may be given comma-separated, space-separated or both)."""
    if values is None:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def add_compare_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of `hf-metaembed compare`; run with `run_compare`."""
    parser.add_argument("data", help="labelled file (.csv, .tsv, .jsonl; optionally .gz)")
    parser.add_argument("--backbones", required=True, nargs="+", help="two or more backbone folders or Hub ids (a,b)")
    parser.add_argument("--names", nargs="+", help="how the table names the backbones (default: folder names)")
    parser.add_argument(
        "--backbone-trust-remote-code",
        action="store_true",
        help="run the modelling code that backbones named in --backbones ship (an auto_map in their config.json); "
        "only for backbones you trust: without it such a backbone is refused at once. Its code is copied to "
        "OUTPUT_DIR/backbone_code, from which every cell and --jobs worker rebuilds it",
    )
    parser.add_argument("--output-dir", required=True, help="folder for the cache, runs and results (resumed)")
    grid = parser.add_argument_group("grid")
    grid.add_argument(
        "--fusions", nargs="+", help="fusions to compare (default: concat, average if available, dme, cdme, fitted)"
    )
    grid.add_argument("--layers", nargs="+", help="layer choices: last, mix, or hidden-state indices (default: last)")
    grid.add_argument("--poolings", nargs="+", help="poolings to compare (default: the architecture's own)")
    grid.add_argument("--architectures", nargs="+", help="pair architectures, for complexes (default: all)")
    grid.add_argument("--subsets", action="store_true", help="also fuse every subset of two or more backbones")
    protocol = parser.add_argument_group("protocol (the same for every cell)")
    split = protocol.add_mutually_exclusive_group()
    split.add_argument("--folds", type=int, help="k-fold cross-validation (default: 5 folds)")
    split.add_argument("--split-column", help="column naming each row's part: train, validation (optional), test")
    split.add_argument(
        "--identity-split",
        type=float,
        metavar="IDENTITY",
        help="identity-clustered 80/10/10 split at this identity, e.g. 0.3 (proteins; hf_metaembed.data)",
    )
    protocol.add_argument("--seeds", type=int, default=1, help="seeds per cell (default: 1)")
    protocol.add_argument("--seed", type=int, default=0, help="first seed, also of the folds (default: 0)")
    protocol.add_argument("--epochs", type=int, default=30, help="most epochs per fold (default: 30)")
    protocol.add_argument("--patience", type=int, default=5, help="early-stopping patience in epochs (default: 5)")
    protocol.add_argument("--learning-rate", type=float, default=3e-3, help="AdamW learning rate (default: 3e-3)")
    protocol.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default: 0.01)")
    protocol.add_argument("--batch-size", type=int, default=32, help="samples per batch (default: 32)")
    protocol.add_argument("--metric", help="metric of the table: accuracy, f1_macro, mcc, auroc; spearman, ...")
    protocol.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default: 1000)")
    protocol.add_argument("--permutations", type=int, default=1000, help="permutation-test draws (default: 1000)")
    model = parser.add_argument_group("fixed model settings (MetaEmbedConfig fields, the same for every cell)")
    model.add_argument("--head", help="head (default: linear)")
    model.add_argument("--unit-encoder", help="unit encoder (default: none)")
    model.add_argument("--fusion-dim", type=int, help="common size of projected fusions (default: smallest backbone)")
    model.add_argument("--unit-types", nargs="+", help="unit type per backbone (word, residue), when not guessed")
    data = parser.add_argument_group("data")
    data.add_argument("--input-format", choices=["csv", "tsv", "jsonl"], help="default: from the file suffix")
    data.add_argument("--column", default="sequence", help="column with the sequences or texts (default: sequence)")
    data.add_argument("--id-column", help="column with record ids")
    data.add_argument("--ligand-column", help="column with the ligand's chains (complexes)")
    data.add_argument("--receptor-column", help="column with the receptor's chains (complexes)")
    data.add_argument("--chain-separator", default=",", help="separator of chains in one cell (default: ,)")
    data.add_argument("--label-column", default="label", help="column with the labels (default: label)")
    data.add_argument("--task", choices=["auto", "classification", "regression"], default="auto")
    data.add_argument("--label-transform", help="KD labels: pkd (or reference); implies regression")
    data.add_argument("--kd-unit", default="M", help="unit of KD labels (default: M)")
    data.add_argument("--min-chain-length", type=int, default=0, help="with --label-transform")
    data.add_argument("--duplicates", default="keep", help="with --label-transform (default: keep)")
    data.add_argument("--truncation", action="store_true", help="cut inputs longer than a backbone accepts")
    parser.add_argument("--jobs", type=int, default=1, help="parallel worker processes for the runs (default: 1)")
    parser.add_argument("--device", help="where the backbones run while caching (default: cpu)")
    return parser


def _split_values(args, records) -> list:
    from ..io.records import InputError, detect_input_format, read_rows

    rows = [row for _, row in read_rows(args.data, detect_input_format(args.data, args.input_format))]
    values = []
    for record in records:
        value = rows[record.index].get(args.split_column) if record.index < len(rows) else None
        if value is None:
            raise InputError(f"{record.where()} has no value in split column {args.split_column!r}")
        values.append(value)
    return values


def _model_settings(args) -> dict:
    settings = {"head": args.head, "unit_encoder": args.unit_encoder, "fusion_dim": args.fusion_dim}
    return {key: value for key, value in settings.items() if value is not None}


def run_compare(args) -> int:
    """`hf-metaembed compare` with its parsed arguments: read the file, run the comparison, print the table."""
    from ..compare import Budget, Comparison, ComparisonError
    from .errors import EXIT_OK, UsageError, one_line
    from .labelled_files import read_labelled
    from .labels import announce, encode_labels, infer_task, sorted_class_names

    data = read_labelled(args, args.data)
    task, why = infer_task(data, args.task, args.label_column)
    if task == "classification":
        names = sorted_class_names(data.labels)
        if len(names) < 2:
            raise UsageError(f"{data.name}: every label is {names[0]!r}; classification needs two or more classes")
        announce("compare", task, why, data, names)
        labels = [str(label) for label in data.labels]
    else:
        announce("compare", task, why, data, None)
        labels = encode_labels(data, task, None, args.label_column)
    if data.pairs:
        inputs = {"ligand": [r.ligand for r in data.records], "receptor": [r.receptor for r in data.records]}
    else:
        inputs = {"sequences": [record.text for record in data.records]}
    split = _split_values(args, data.records) if args.split_column else None
    reader_settings = {"unit_types": _names(args.unit_types)} if args.unit_types else {}
    try:
        comparison = Comparison(
            _names(args.backbones),
            **inputs,
            labels=labels,
            output_dir=args.output_dir,
            names=_names(args.names),
            task=task,
            fusions=_names(args.fusions),
            layers=_names(args.layers),
            poolings=_names(args.poolings),
            architectures=_names(args.architectures),
            subsets=args.subsets,
            seeds=args.seeds,
            seed=args.seed,
            folds=args.folds,
            split=split,
            identity=args.identity_split,
            metric=args.metric,
            budget=Budget(args.epochs, args.patience, args.learning_rate, args.weight_decay, args.batch_size),
            model_settings=_model_settings(args),
            reader_settings=reader_settings,
            backbone_trust_remote_code=args.backbone_trust_remote_code,
            truncation=args.truncation,
            jobs=args.jobs,
            resamples=args.resamples,
            permutations=args.permutations,
            device=args.device,
            progress=not args.no_progress,
        )
        print(
            f"hf-metaembed compare: {len(comparison.cells)} cells x {len(comparison.seeds)} seeds on "
            f"{comparison.splits.method} ({len(data.records)} records)",
            file=sys.stderr,
        )
        result = comparison.run()
    except ComparisonError as error:
        raise UsageError(one_line(error)) from None
    print(result.to_markdown())
    trained, resumed = result.summary["runs_trained"], result.summary["runs_resumed"]
    reads = result.summary["cache"]["backbone_segments_read"]
    print(
        f"hf-metaembed compare: {trained} runs trained, {resumed} resumed; backbone segments read: "
        + ", ".join(f"{name} {count}" for name, count in reads.items())
        + f"; results in {args.output_dir} (cells.csv, runs.csv, results.json, comparison.png)",
        file=sys.stderr,
    )
    return EXIT_OK


__all__ = ["add_compare_arguments", "run_compare"]
