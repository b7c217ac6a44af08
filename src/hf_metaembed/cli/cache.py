"""`hf-metaembed cache`: build a feature cache (`hf_metaembed.cache`) for the sequences or complexes of a CSV, TSV or
JSONL file, with a saved model or with backbones named on the command line."""

import argparse
import os
from collections.abc import Sequence

import torch

from .._utils import metaembed_of
from ..cache import FeatureCache, build_feature_cache
from ..cache.segments import pair_architectures
from ..io.records import read_rows, records_to_inputs
from ..modeling.modeling_metaembed import MetaEmbedModel
from ..modeling.processing_metaembed import MetaEmbedProcessor
from .errors import EXIT_OK, UsageError, one_line
from .loading import load_saved_model, processor_for, saved_model_type


def _model_and_processor(model_or_folder, processor, config_kwargs: dict, backbone_kwargs: dict):
    """A MetaEmbed model and its processor from a model object, a saved model folder, or backbone names."""
    if isinstance(model_or_folder, torch.nn.Module):
        return model_or_folder, processor or processor_for(metaembed_of(model_or_folder).config)
    names = [model_or_folder] if isinstance(model_or_folder, str | os.PathLike) else list(model_or_folder)
    if len(names) == 1 and saved_model_type(names[0]) == "metaembed":
        model, saved_processor = load_saved_model(names[0], require_processor=False)
        return model, processor or saved_processor
    names = [str(name) for name in names]
    model = MetaEmbedModel.from_backbones(names, backbone_kwargs=backbone_kwargs or None, **config_kwargs)
    return model, processor or MetaEmbedProcessor.from_backbones(names)


def build_cache_from_file(
    path: str | os.PathLike,
    model_or_folder,
    output_dir: str | os.PathLike,
    *,
    processor: MetaEmbedProcessor | None = None,
    sequence_column: str | None = None,
    ligand_columns: Sequence[str] | None = None,
    receptor_columns: Sequence[str] | None = None,
    chain_separator: str = ",",
    architecture: str | Sequence[str] | None = None,
    layers: Sequence[str | int] | None = None,
    level: str = "unit",
    subword_pooling: str = "mean",
    pooling: str = "mean",
    dtype: str | None = None,
    device: str | None = None,
    batch_size: int = 8,
    shard_size_mb: float = 256.0,
    overwrite: bool = False,
    progress: bool = True,
) -> FeatureCache:
    """Build a feature cache for the sequences or complexes of a CSV/TSV/JSONL file; returns the `FeatureCache`.

    Args:
        path: the input table (see `hf_metaembed.io.records.records_to_inputs` for how columns become sequences or
            chains).
        model_or_folder: a MetaEmbed model, a folder saved with `save_pretrained` (its processor is loaded from the
            same folder when saved there), or a list of backbone names/folders (then `layers`, `level`,
            `subword_pooling`, `pooling` and `dtype` describe the model the cache is for).
        output_dir: the cache folder (resumed if it holds a cache with the same fingerprint).
        architecture: architecture(s) whose segments to cache; plain sequences default to `single`, complexes to
            the model's architecture.
        device: where to run the backbones (e.g. `"cuda"`).
        Other arguments as `hf_metaembed.cache.build_feature_cache` and `records_to_inputs`.
    """
    inputs = records_to_inputs(
        [row for _, row in read_rows(path)],
        sequence_column=sequence_column,
        ligand_columns=ligand_columns,
        receptor_columns=receptor_columns,
        chain_separator=chain_separator,
    )
    config_kwargs = {"level": level, "subword_pooling": subword_pooling, "pooling": pooling}
    if layers is not None:
        config_kwargs["layers"] = [int(layer) if str(layer).lstrip("-").isdigit() else layer for layer in layers]
    backbone_kwargs = {"dtype": getattr(torch, dtype)} if dtype else {}
    model, processor = _model_and_processor(model_or_folder, processor, config_kwargs, backbone_kwargs)
    if device is not None:
        model.to(device)
    if architecture is None:
        architecture = "single" if "sequences" in inputs else metaembed_of(model).config.architecture
        if architecture == "single" and "sequences" not in inputs:
            raise ValueError(
                f"the file holds complexes: name the architecture whose segments to cache (one or more of "
                f"{', '.join(pair_architectures())})"
            )
    return build_feature_cache(
        model,
        processor,
        output_dir,
        **inputs,
        architecture=architecture,
        batch_size=batch_size,
        shard_size_mb=shard_size_mb,
        overwrite=overwrite,
        progress=progress,
    )


def add_cache_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the arguments of `hf-metaembed cache` to `parser` (its subcommand parser); run with `run_cache_command`."""
    parser.add_argument("input", help="CSV, TSV or JSONL file of sequences or complexes")
    parser.add_argument("output_dir", help="cache folder (resumed when it already holds this model's cache)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a MetaEmbed model folder saved with save_pretrained")
    source.add_argument("--backbones", nargs="+", help="backbone Hub ids or local folders")
    parser.add_argument("--layers", nargs="+", help="with --backbones: layer per backbone ('last', an index, 'mix')")
    parser.add_argument("--level", default="unit", choices=["unit", "sequence"], help="with --backbones")
    parser.add_argument("--subword-pooling", default="mean", choices=["mean", "first"], help="with --backbones")
    parser.add_argument("--pooling", default="mean", help="with --backbones and --level sequence: mean or max")
    parser.add_argument("--dtype", help="with --backbones: load them in this torch dtype (e.g. float16)")
    parser.add_argument("--architecture", nargs="+", help="architecture(s) whose segments to cache (single, sc, ...)")
    parser.add_argument("--sequence-column", help="column of plain sequences")
    parser.add_argument("--ligand-columns", nargs="+", help="column(s) holding the ligand chains")
    parser.add_argument("--receptor-columns", nargs="+", help="column(s) holding the receptor chains")
    parser.add_argument("--chain-separator", default=",", help="separator of several chains in one cell")
    parser.add_argument("--batch-size", type=int, default=8, help="segments per backbone forward pass")
    parser.add_argument("--shard-size-mb", type=float, default=256.0, help="approximate size of each shard")
    parser.add_argument("--device", help="device to run the backbones on (e.g. cuda)")
    parser.add_argument("--overwrite", action="store_true", help="replace a cache built for another model")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def run_cache_command(args: argparse.Namespace) -> int:
    """`hf-metaembed cache`: build the cache and print a summary; returns `EXIT_OK`.

    Every `ValueError` or `TypeError` here is the input's or the arguments' fault (an unknown column, an invalid
    sequence, a cache folder built for another model, a bad layer), so it is raised as a `UsageError` (exit code 2).
    """
    architecture = args.architecture[0] if args.architecture and len(args.architecture) == 1 else args.architecture
    try:
        cache = build_cache_from_file(
            args.input,
            args.model or args.backbones,
            args.output_dir,
            sequence_column=args.sequence_column,
            ligand_columns=args.ligand_columns,
            receptor_columns=args.receptor_columns,
            chain_separator=args.chain_separator,
            architecture=architecture,
            layers=args.layers,
            level=args.level,
            subword_pooling=args.subword_pooling,
            pooling=args.pooling,
            dtype=args.dtype,
            device=args.device,
            batch_size=args.batch_size,
            shard_size_mb=args.shard_size_mb,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except (ValueError, TypeError) as error:
        raise UsageError(one_line(error)) from error
    summary = cache.build_summary
    print(
        f"cached {summary['computed']} new segments ({summary['reused']} reused; {summary['unique_segments']} "
        f"unique of {summary['segments_read']} read) in {summary['shards_written']} new shards; {cache.path} now "
        f"holds {len(cache)} segments in {len(cache.shards)} shards"
    )
    return EXIT_OK


__all__ = ["add_cache_arguments", "build_cache_from_file", "run_cache_command"]
