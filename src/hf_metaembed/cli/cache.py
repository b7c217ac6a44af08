"""`hf-metaembed cache`: build a feature cache (`hf_metaembed.cache`) for the sequences or complexes of a FASTA, text,
CSV, TSV or JSONL file, with a saved model or with backbones named on the command line (`cache build`, also reached as
plain `cache INPUT OUTPUT ...`), and describe or verify a built one (`cache inspect`)."""

import argparse
import json
import os
from collections.abc import Sequence

import torch

from .._utils import metaembed_of
from ..batching import DEFAULT_MAX_TOKENS
from ..cache import CorruptShardError, FeatureCache, build_feature_cache
from ..cache.lock import CacheLockedError
from ..cache.segments import pair_architectures
from ..cache.store import INDEX_NAME
from ..distributed import launched_rank
from ..io.records import TABLE_FORMATS, detect_input_format, read_records, read_rows, records_to_inputs
from ..modeling.modeling_metaembed import MetaEmbedModel
from ..modeling.processing_metaembed import MetaEmbedProcessor
from .errors import EXIT_FAILURE, EXIT_OK, CLIError, UsageError, cli_hints, one_line
from .folders import backbone_list
from .loading import load_saved_model, processor_for, saved_model_type, torch_device
from .options import (
    CACHE_SUBCOMMANDS,
    add_cache_arguments,
    add_inspect_arguments,
    check_block_names,
    with_default_cache_subcommand,
)


def _model_and_processor(model_or_folder, processor, config_kwargs: dict, backbone_kwargs: dict, trust: bool):
    """A MetaEmbed model and its processor from a model object, a saved model folder, or backbone names (`trust`:
    run the own code of backbones that ship it)."""
    if isinstance(model_or_folder, torch.nn.Module):
        return model_or_folder, processor or processor_for(metaembed_of(model_or_folder).config)
    names = [model_or_folder] if isinstance(model_or_folder, str | os.PathLike) else list(model_or_folder)
    if len(names) == 1 and saved_model_type(names[0]) == "metaembed":
        model, saved_processor = load_saved_model(names[0], require_processor=False)
        return model, processor or saved_processor
    names = [str(name) for name in names]
    model = MetaEmbedModel.from_backbones(
        names, backbone_kwargs=backbone_kwargs or None, backbone_trust_remote_code=trust, **config_kwargs
    )
    return model, processor or MetaEmbedProcessor.from_backbones(names, backbone_trust_remote_code=trust)


def _read_inputs(
    path,
    input_format: str | None,
    sequence_column: str | None,
    ligand_columns: Sequence[str] | None,
    receptor_columns: Sequence[str] | None,
    chain_separator: str,
) -> dict:
    """`{"sequences": [...]}` or `{"ligand": [...], "receptor": [...]}` from any input format."""
    input_format = detect_input_format(path, input_format)
    if input_format in TABLE_FORMATS:
        numbered = list(read_rows(path, input_format))
        return records_to_inputs(
            [row for _, row in numbered],
            lines=[line for line, _ in numbered],
            file=os.path.basename(os.fspath(path)),
            sequence_column=sequence_column,
            ligand_columns=ligand_columns,
            receptor_columns=receptor_columns,
            chain_separator=chain_separator,
        )
    if ligand_columns or receptor_columns:
        raise UsageError(
            f"a {input_format} file holds plain sequences, not ligand and receptor columns; give complexes as CSV, "
            "TSV or JSONL"
        )
    sequences = [record.text for record in read_records(path, input_format)]
    if not sequences:
        raise UsageError(f"{os.fspath(path)!r} holds no sequences")
    return {"sequences": sequences}


def build_cache_from_file(
    path: str | os.PathLike,
    model_or_folder,
    output_dir: str | os.PathLike,
    *,
    processor: MetaEmbedProcessor | None = None,
    input_format: str | None = None,
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
    batch_size: int = 64,
    max_tokens: int | Sequence[int] = DEFAULT_MAX_TOKENS,
    shard_size_mb: float = 256.0,
    overwrite: bool = False,
    lock_timeout: float | None = None,
    progress: bool = True,
    distributed: bool = False,
    backbone_trust_remote_code: bool = False,
) -> FeatureCache:
    """Build a feature cache for the sequences or complexes of a file; returns the `FeatureCache`.

    Args:
        path: a FASTA or text file (plain sequences), or a CSV/TSV/JSONL table (see
            `hf_metaembed.io.records.records_to_inputs` for how columns become sequences or chains); `.gz` is read
            transparently.
        model_or_folder: a MetaEmbed model, a folder saved with `save_pretrained` (its processor is loaded from the
            same folder when saved there), or a list of backbone names/folders (then `layers`, `level`,
            `subword_pooling`, `pooling` and `dtype` describe the model the cache is for).
        output_dir: the cache folder (resumed if it holds a cache with the same fingerprint).
        input_format: one of `hf_metaembed.io.records.INPUT_FORMATS`, or None to tell from the suffix.
        architecture: architecture(s) whose segments to cache; plain sequences default to `single`, complexes to
            the model's architecture.
        device: where to run the backbones (e.g. `"cuda"`).
        lock_timeout: seconds to wait while another build writes to `output_dir` (None: until it is free; 0: fail
            at once with `hf_metaembed.cache.lock.CacheLockedError`).
        backbone_trust_remote_code: with backbone names, run the modelling code of those that ship their own (as
            `MetaEmbedModel.from_backbones`); such a backbone is refused without it.
        Other arguments as `hf_metaembed.cache.build_feature_cache` and `records_to_inputs`.
    """
    inputs = _read_inputs(path, input_format, sequence_column, ligand_columns, receptor_columns, chain_separator)
    config_kwargs = {"level": level, "subword_pooling": subword_pooling, "pooling": pooling}
    if layers is not None:
        config_kwargs["layers"] = [int(layer) if str(layer).lstrip("-").isdigit() else layer for layer in layers]
    backbone_kwargs = {"dtype": getattr(torch, dtype)} if dtype else {}
    model, processor = _model_and_processor(
        model_or_folder, processor, config_kwargs, backbone_kwargs, backbone_trust_remote_code
    )
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
        max_tokens=max_tokens,
        shard_size_mb=shard_size_mb,
        overwrite=overwrite,
        lock_timeout=lock_timeout,
        progress=progress,
        distributed=distributed,
    )


# ---------------------------------------------------------------------------------------------- arguments


# ---------------------------------------------------------------------------------------------- commands


def run_cache_command(args: argparse.Namespace) -> int:
    """`hf-metaembed cache build`: build the cache and print a summary; returns `EXIT_OK`.

    Every `ValueError` or `TypeError` here is the input's or the arguments' fault (an unknown column, an invalid
    sequence, a cache folder built for another model, a bad layer), so it is raised as a `UsageError` (exit code 2).
    A folder another build holds past `--lock-timeout` is a failure (exit code 1): running again later succeeds.
    """
    architecture = args.architecture[0] if args.architecture and len(args.architecture) == 1 else args.architecture
    if args.lock_timeout is not None and args.lock_timeout < 0:
        raise UsageError(f"--lock-timeout must be 0 or more seconds, got {args.lock_timeout:g}")
    device = str(torch_device(args.device)) if args.device else None
    if args.model and args.backbone_trust_remote_code:
        raise UsageError(
            f"--backbone-trust-remote-code applies to backbones named in --backbones; the saved model {args.model!r} "
            "rebuilds its backbones from the code saved with it: drop --backbone-trust-remote-code"
        )
    if args.fusion is not None:
        check_block_names(argparse.Namespace(fusion=args.fusion))  # a typo is an error even where it changes nothing
    try:
        cache = build_cache_from_file(
            args.input,
            args.model or [name for item in args.backbones for name in backbone_list(item)],
            args.output_dir,
            input_format=args.input_format,
            sequence_column=args.column,
            ligand_columns=args.ligand_columns,
            receptor_columns=args.receptor_columns,
            chain_separator=args.chain_separator,
            architecture=architecture,
            layers=args.layers,
            level=args.level,
            subword_pooling=args.subword_pooling,
            pooling=args.pooling,
            dtype=args.dtype,
            device=device,
            batch_size=args.batch_size,
            max_tokens=args.max_tokens,
            shard_size_mb=args.shard_size_mb,
            overwrite=args.overwrite,
            lock_timeout=args.lock_timeout,
            progress=not args.no_progress,
            distributed=True,  # under accelerate launch / torchrun the processes share the shards
            backbone_trust_remote_code=args.backbone_trust_remote_code,
        )
    except CacheLockedError as error:
        holder = f" ({error.holder})" if error.holder else ""
        failure = CLIError(
            f"cache folder {args.output_dir!r} is being written by another build{holder}, which did not finish "
            f"within {error.timeout:g} s; run again when it has finished, or wait longer with --lock-timeout SECONDS "
            "(without it the command waits until the folder is free)"
        )
        raise failure from error
    except (ValueError, TypeError) as error:
        raise UsageError(cli_hints(one_line(error))) from error
    summary = cache.build_summary
    if launched_rank() != 0:  # the main process reports for all
        return EXIT_OK
    print(
        f"cached {summary['computed']} new segments ({summary['reused']} reused; {summary['unique_segments']} "
        f"unique of {summary['segments_read']} read) in {summary['shards_written']} new shards; {cache.path} now "
        f"holds {len(cache)} segments in {len(cache.shards)} shards"
    )
    return EXIT_OK


def describe_cache(cache: FeatureCache) -> dict:
    """What `cache inspect` reports: size, shards and the fingerprint's backbones and settings."""
    fingerprint = cache.fingerprint
    return {
        "path": str(cache.path),
        "segments": len(cache),
        "units": sum(cache.num_units(key) for key in cache.keys()),
        "shards": len(cache.shards),
        "bytes": sum(record["bytes"] for record in cache.shards.values()),
        "backbones": [
            {key: backbone.get(key) for key in ("name", "revision", "model_type", "dtype", "layer")}
            for backbone in fingerprint["backbones"]
        ],
        "alignment": fingerprint["alignment"],
        "processor": fingerprint["processor"],
    }


def _text_report(description: dict) -> str:
    lines = [
        f"{description['path']}: feature cache of {description['segments']} segments ({description['units']} units) "
        f"in {description['shards']} shards, {description['bytes'] / 2**20:.1f} MiB"
    ]
    for index, backbone in enumerate(description["backbones"]):
        revision = f"@{backbone['revision']}" if backbone["revision"] else ""
        lines.append(
            f"  backbone {index}: {backbone['name']}{revision} ({backbone['model_type']}, {backbone['dtype']}, layer "
            f"{backbone['layer']})"
        )
    lines.append("  alignment: " + ", ".join(f"{k}={v!r}" for k, v in description["alignment"].items()))
    lines.append("  processor: " + ", ".join(f"{k}={v!r}" for k, v in description["processor"].items()))
    verified = description.get("verified")
    if verified is None:
        lines.append("  checksums: not checked (pass --verify)")
    elif verified:
        lines.append("  checksums: every shard matches the index")
    else:
        lines += [f"  damaged: {problem}" for problem in description["problems"]]
    return "\n".join(lines)


def run_inspect_command(args: argparse.Namespace) -> int:
    """`hf-metaembed cache inspect`: print what a cache holds and, with `--verify`, check every shard's checksum.

    Returns `EXIT_OK`, or `EXIT_FAILURE` when `--verify` finds a damaged shard (the build command recomputes it).
    """
    if not os.path.isdir(args.cache_dir):
        raise UsageError(f"cache folder {args.cache_dir!r} does not exist")
    if not os.path.isfile(os.path.join(args.cache_dir, INDEX_NAME)):
        raise UsageError(
            f"{args.cache_dir!r} is not a feature cache (it has no {INDEX_NAME}); build one with "
            "`hf-metaembed cache build INPUT OUTPUT --model M`"
        )
    try:
        cache = FeatureCache(args.cache_dir, verify_checksums=False)
    except CorruptShardError as error:  # a shard missing or cut short: damage, not a usage error
        raise CLIError(cli_hints(one_line(error))) from error
    except ValueError as error:
        raise UsageError(cli_hints(one_line(error))) from error
    description = describe_cache(cache)
    if args.verify:
        problems = []
        for name in cache.shards:
            try:
                cache.verify_shard(name)
            except ValueError as error:
                problems.append(cli_hints(one_line(error)))
        description.update(verified=not problems, problems=problems)
    print(json.dumps(description, sort_keys=True) if args.json else _text_report(description))
    return EXIT_FAILURE if description.get("problems") else EXIT_OK


__all__ = [
    "CACHE_SUBCOMMANDS",
    "add_cache_arguments",
    "add_inspect_arguments",
    "build_cache_from_file",
    "describe_cache",
    "run_cache_command",
    "run_inspect_command",
    "with_default_cache_subcommand",
]
