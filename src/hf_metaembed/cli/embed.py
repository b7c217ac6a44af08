"""`hf-metaembed embed`: stream the records of a sequence file through a saved model into resumable shards.

Records are read twice, streamed: a first pass checks every one before any model is loaded, the second embeds them in
batches and hands the results to an `EmbeddingShardWriter`, which writes them shard by shard, atomically; a rerun of
the same command resumes after the last whole shard. A `.npy` or `.npz` output is assembled from the shards at the end.
"""

import contextlib
import itertools
import shutil
import sys
from pathlib import Path

from ..io.embeddings import EmbeddingShardWriter, write_npy, write_npz
from ..io.files import check_writable_output, file_sha256
from ..io.records import InputError, detect_input_format, read_records
from .errors import EXIT_OK, UsageError, check_positive
from .loading import batches, check_model_folder, encode, load_processor, progress, torch_device


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
        "model_config_sha256": file_sha256(model_folder / "config.json"),
        "model_weights": [[w.name, w.stat().st_size, w.stat().st_mtime_ns] for w in weights],
        "fusion_weights": bool(args.fusion_weights),
        "truncation": bool(args.truncation),
    }


def _validate_input(args, processor, input_path: Path, input_format: str) -> int:
    """First streaming pass, before any model is loaded: count the records and check that the processor accepts
    every one of them, so a bad record stops the run at once rather than hours into it."""
    count = 0
    records = read_records(input_path, input_format, args.column, args.id_column)
    with progress(None, "checking input", args.no_progress) as bar:
        for batch in batches(records, 256):
            encode(processor, batch, truncation=args.truncation or None, return_tensors=None)
            count += len(batch)
            bar.update(len(batch))
    if count == 0:
        raise InputError(f"{input_path.name} holds no records")
    return count


def run_embed(args) -> int:
    """`hf-metaembed embed`: stream records through a saved model into resumable shards (then .npy/.npz)."""
    check_positive(args.batch_size, "--batch-size")
    check_positive(args.shard_size, "--shard-size")
    check_positive(args.max_batches, "--max-batches")
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
    model_folder = check_model_folder(args.model)
    processor = load_processor(model_folder)
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
    import torch

    model = _load_embedding_model(model_folder, torch_device(args.device))
    device = next(model.parameters()).device
    records = read_records(input_path, input_format, args.column, args.id_column)
    pending = itertools.islice(records, writer.records_done, None)
    with progress(total, "embedding", args.no_progress, initial=writer.records_done) as bar:
        try:
            for number, batch in enumerate(batches(pending, args.batch_size), start=1):
                encoded = encode(processor, batch, truncation=args.truncation or None, return_tensors="pt")
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
    """The saved model of `folder` on `device`, in eval mode; `embed` reads single sequences only."""
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
