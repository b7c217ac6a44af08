"""`hf-metaembed fit-fusion`: fit a fitted meta-embedding (svd, pca, 1ton, gcca, daeme, caeme, aaeme, lle) on the
backbone states of a sequence file or of a feature cache, and save the model with its processor
(`hf_metaembed.fitting.fit_fusion`).

This module imports only the standard library until the command runs, so building the parser stays light.
"""

import argparse
import json

from .options import TRUST_HELP

FIT_FUSION_DESCRIPTION = (
    "Fit a fitted meta-embedding on the unit states of a model's backbones and save the model and processor to\n"
    "OUTPUT_DIR. DATA is a sequence file (FASTA, text, CSV, TSV, JSONL; the backbones read it batch by batch,\n"
    "nothing is kept between batches) or a feature cache folder built for the same backbones and settings\n"
    "(`hf-metaembed cache`). The model is built from --backbones with --fusion and --dim, or is a saved --model\n"
    "whose fusion is a fitted one. The fitted tensors are saved in model.safetensors and are frozen when the model\n"
    "trains, unless --trainable. Prints the fit report as JSON on stdout."
)
FITTED_FUSIONS = "svd, pca, 1ton, gcca, daeme, caeme, aaeme, lle"


def add_fit_fusion_command(subparsers, subparser, common) -> None:
    """Register `fit-fusion` with `hf-metaembed`'s parser (`subparser`/`common`: the parser's own helpers)."""
    parser = subparser(
        subparsers, "fit-fusion", "fit a fitted meta-embedding (svd, pca, 1ton, ...) on data", FIT_FUSION_DESCRIPTION
    )
    add_fit_fusion_arguments(parser)
    common(parser)
    parser.set_defaults(handler=run_fit_fusion)


def add_fit_fusion_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of `hf-metaembed fit-fusion`."""
    parser.add_argument("data", help="sequence file (.fasta, .txt, .csv, .tsv, .jsonl; .gz too) or cache folder")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--backbones", help="comma-separated backbone folders or Hub ids to build the model from")
    source.add_argument("--model", help="folder of a saved MetaEmbed model whose fusion is a fitted one")
    parser.add_argument("--output-dir", required=True, help="folder to save the fitted model and processor in")
    group = parser.add_argument_group("new model (with --backbones)")
    group.add_argument("--fusion", default="svd", help=f"one of {FITTED_FUSIONS} (default: svd)")
    group.add_argument("--dim", type=int, help="fused size, fusion_dim (default: the smallest backbone width)")
    group.add_argument("--level", choices=["unit", "sequence"], help="fuse per unit or pooled vectors (default: unit)")
    group.add_argument("--trainable", action="store_true", help="make the fitted tensors trainable parameters")
    group.add_argument("--backbone-trust-remote-code", action="store_true", default=None, help=TRUST_HELP)
    group.add_argument("--neighbors", type=int, help="lle: neighbours per source (default: 10)")
    group.add_argument("--anchors", type=int, help="lle: anchor units kept (default: 1000)")
    group.add_argument("--seed", type=int, default=0, help="randomised SVD, autoencoder start, LLE sample (default 0)")
    fit = parser.add_argument_group("fitting")
    fit.add_argument("--max-vectors", type=int, help="fit on the first this many unit vectors (default: all)")
    fit.add_argument("--epochs", type=int, help="daeme/caeme/aaeme: passes over the data (default: 10)")
    parser.add_argument("--input-format", help="input format (default: from the file suffix)")
    parser.add_argument("--column", default="sequence", help="CSV column / JSONL field with the sequences")
    return parser


def run_fit_fusion(args: argparse.Namespace) -> int:
    """Build or load the model, fit its fusion on DATA, save model and processor, print the report."""
    from pathlib import Path

    from ..fitting import fit_fusion, fitted_fusion_names
    from ..fitting.rows import is_cache_folder
    from .errors import EXIT_OK, UsageError
    from .loading import build_from_backbones, load_saved_model

    if args.model is not None:
        for flag in ("dim", "level", "neighbors", "anchors"):
            if getattr(args, flag) is not None:
                raise UsageError(f"--{flag} sets up a new model from --backbones; the saved --model keeps its own")
        if args.backbone_trust_remote_code:
            raise UsageError(
                "--backbone-trust-remote-code applies to backbones named in --backbones; the saved model "
                f"{args.model!r} rebuilds its backbones from the code saved with it: drop --backbone-trust-remote-code"
            )
        model, processor = load_saved_model(args.model)
    else:
        if args.fusion not in fitted_fusion_names():
            raise UsageError(f"--fusion {args.fusion}: not a fitted fusion; choose one of: {FITTED_FUSIONS}")
        settings = {"fitted_trainable": args.trainable}
        for flag, field in (("dim", "fusion_dim"), ("neighbors", "lle_neighbors"), ("anchors", "lle_anchors")):
            if getattr(args, flag) is not None:
                settings[field] = getattr(args, flag)
        model, processor = build_from_backbones(args, **settings)
    if is_cache_folder(args.data):
        from ..cache import load_feature_cache

        source = load_feature_cache(args.data, model, processor)
    else:
        from .cache import _read_inputs

        inputs = _read_inputs(args.data, args.input_format, args.column, None, None, ",")
        source = inputs["sequences"]
    options = {"epochs": args.epochs} if args.epochs is not None else {}
    report = fit_fusion(model, source, processor=processor, max_vectors=args.max_vectors, seed=args.seed, **options)
    output = Path(args.output_dir)
    model.save_pretrained(output)
    processor.save_pretrained(output)
    summary = {"fusion": report.fusion, "vectors": report.vectors, "seconds": round(report.seconds, 3)}
    summary.update({k: v for k, v in report.details.items() if not isinstance(v, list)})
    if "epoch_losses" in report.details:
        summary["final_loss"] = report.details["epoch_losses"][-1]
    summary["output_dir"] = str(output)
    print(json.dumps(summary))
    return EXIT_OK
