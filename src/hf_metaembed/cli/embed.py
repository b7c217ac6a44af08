"""`hf-metaembed embed`: stream the records of a sequence file (or the complexes of a table) through a saved model into
resumable shards, on one process or several.

Records are read twice, streamed: a first pass checks every one before any model is loaded, the second embeds them.
The second pass takes the input in blocks of `--shard-size` records; within a block, records run longest first in
token-budget batches (`hf_metaembed.batching`: `--max-tokens` padded tokens per backbone pass, `--batch-size`
records at most), and what they give is written as parts (`hf_metaembed.io.embedding_parts`), which the main process
assembles into the output's shards in input order. Under `accelerate launch` or `torchrun` every process takes every
N-th batch of the same plan and writes its own parts, so the output equals a single-process run's up to float
rounding. A rerun of the same command, after a crash of any process, computes only the records no shard or part
holds. A `.npy` or `.npz` output is assembled from the shards at the end.
"""

import argparse
import contextlib
import itertools
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..batching import autocast, feature_rows, move_to_device, plan_batches, sample_token_lengths
from ..distributed import Workers, current_workers
from ..io.embedding_parts import EmbeddingParts
from ..io.embeddings import EMBEDDING_INDEX_NAME, EmbeddingShardWriter
from ..io.files import atomic_write_json, check_writable_output
from ..io.records import (
    TABLE_FORMATS,
    InputError,
    PairRecord,
    Record,
    detect_input_format,
    read_pair_records,
    read_records,
)
from .embed_output import EmbedOutput
from .errors import EXIT_OK, UsageError
from .loading import batches, encode, processor_options, progress, torch_device
from .model_source import ModelSource

# ---------------------------------------------------------------------------------------------- reading records


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


def _check_columns(args, input_format: str, architecture: str) -> bool:
    """Whether the model pairs complexes, after checking the column options suit it; pair models read tables."""
    from ..cache.segments import pair_architectures

    pair = architecture in pair_architectures()
    columns = {"--ligand-column": args.ligand_column, "--receptor-column": args.receptor_column}
    given = [flag for flag, value in columns.items() if value]
    if pair and len(given) < 2:
        raise UsageError(
            f"this model pairs ligand and receptor chains (architecture {architecture!r}): pass --ligand-column and "
            "--receptor-column naming the columns that hold each side's chains"
        )
    if not pair and given:
        raise UsageError(
            f"{' and '.join(given)} need a pair model (architecture sc, ec, hp or pad); this model reads single "
            "sequences: pass --column instead"
        )
    if pair and input_format not in TABLE_FORMATS:
        raise UsageError(f"{input_format} files have no columns: give complexes as CSV, TSV or JSONL")
    return pair


def read_items(path: Path, input_format: str, args, pair: bool) -> Iterator[Record | PairRecord]:
    """Stream the records of the input: complexes (`PairRecord`) for a pair model, sequences (`Record`) otherwise."""
    if pair:
        return read_pair_records(
            path,
            input_format,
            ligand_columns=[args.ligand_column],
            receptor_columns=[args.receptor_column],
            chain_separator=args.chain_separator,
            id_column=args.id_column,
        )
    return read_records(path, input_format, args.column, args.id_column)


def encode_items(processor, items: list, architecture: str, args) -> list[dict]:
    """Per-sample processor features of `items` (records or complexes); a bad one is named by position and id."""
    sides = {"ligand": args.ligand_column, "receptor": args.receptor_column}
    options = processor_options(args)
    features = encode(processor, items, sides, return_tensors=None, architecture=architecture, **options)
    return feature_rows(features)


def _validate_input(args, processor, items: Iterator, architecture: str, show: bool) -> int:
    """First streaming pass, before any model is loaded: count the records and check that the processor accepts
    every one of them, so a bad record stops the run at once rather than hours into it."""
    count = 0
    with progress(None, "checking input", args.no_progress or not show) as bar:
        for chunk in batches(items, 256):
            encode_items(processor, chunk, architecture, args)
            count += len(chunk)
            bar.update(len(chunk))
    if count == 0:
        raise InputError(f"{Path(args.input).name} holds no records")
    return count


def _check_budget(max_tokens: int | list[int], num_backbones: int) -> None:
    if isinstance(max_tokens, list) and len(max_tokens) != num_backbones:
        raise UsageError(
            f"--max-tokens lists {len(max_tokens)} budgets but the model has {num_backbones} backbones; give one "
            "number for all of them, or one per backbone"
        )


def _embed_fingerprint(args, input_path: Path, input_format: str, source: ModelSource) -> dict:
    stat = input_path.stat()
    tables = input_format in TABLE_FORMATS
    return {
        "input": str(input_path.resolve()),
        "input_size": stat.st_size,
        "input_mtime_ns": stat.st_mtime_ns,
        "input_format": input_format,
        "column": args.column if tables and not args.ligand_column else None,
        "ligand_column": args.ligand_column,
        "receptor_column": args.receptor_column,
        "chain_separator": args.chain_separator if args.ligand_column else None,
        "id_column": args.id_column,
        **source.fingerprint(),
        "fusion_weights": bool(args.fusion_weights),
        "truncation": bool(args.truncation),
        "processor_options": processor_options(args),
        "autocast": args.autocast,
    }


# ---------------------------------------------------------------------------------------------- the command


@dataclass
class _Run:
    """What every process of one `embed` run shares."""

    args: argparse.Namespace
    workers: Workers
    processor: object
    architecture: str
    work_folder: Path
    parts: EmbeddingParts
    total: int
    records_done: int  # records in whole shards when the run started


def run_embed(args) -> int:
    """`hf-metaembed embed`: embed every record into resumable shards under `OUTPUT.partial/`, on every launched
    process, then make the output (the folder, or a .npy/.npz assembled from the shards)."""
    input_path = Path(args.input)
    input_format = detect_input_format(input_path, args.input_format)
    output = Path(args.output)
    kind = _output_kind(output)
    if kind == "npy" and args.fusion_weights:
        raise UsageError("a .npy file holds one array: write fusion weights to a .npz file or a folder instead")
    check_writable_output(output)
    source = ModelSource(args)
    torch_device(args.device)  # a bad --device is a usage error before any work
    fingerprint = _embed_fingerprint(args, input_path, input_format, source)
    outputs = EmbedOutput(output, kind)
    if not args.overwrite and outputs.finished(fingerprint):
        print(outputs.finished_message(), file=sys.stderr)
        return EXIT_OK
    work_folder = outputs.partial
    architecture = source.architecture
    pair = _check_columns(args, input_format, architecture)
    processor = source.processor()
    _check_budget(args.max_tokens, len(processor.tokenizers))
    workers = current_workers(args.device)
    items = read_items(input_path, input_format, args, pair)
    total = _validate_input(args, processor, items, architecture, workers.is_main)

    writer = None
    parts = EmbeddingParts(work_folder)
    if workers.is_main:
        outputs.adopt_earlier_run()
        if args.overwrite:
            parts.prepare(overwrite=True)
        writer = EmbeddingShardWriter(work_folder, fingerprint, args.shard_size, overwrite=args.overwrite)
        if not writer.index_path.exists():  # parts may come before the first shard: the folder names its run now
            atomic_write_json(writer.index_path, writer.index)
        parts.prepare()
    workers.barrier()  # the folder is ready: every process reads the same shards and parts before anyone writes
    index = writer.index if writer is not None else _read_index(work_folder)
    parts.refresh()
    workers.barrier()
    run = _Run(args, workers, processor, architecture, work_folder, parts, total, index["records"])
    stopped = False
    if not index["complete"]:
        stopped = _embed_records(run, writer, input_path, input_format, source, pair)
    workers.barrier()
    if not workers.is_main:
        return EXIT_OK
    if not writer.complete:
        parts.refresh()
        _assemble_covered(run, writer)
        if writer.records_done + writer.records_queued >= total:
            writer.finish()
            parts.remove_folder()
    if not writer.complete:
        done = writer.records_done + len(parts.done())
        reason = f"stopped after {args.max_batches} batches" if stopped else "stopped early"
        print(
            f"{reason} with {done} of {total} records done ({writer.records_done} in shards, in {work_folder}); "
            "rerun the same command to continue",
            file=sys.stderr,
        )
        return EXIT_OK
    outputs.finish(keep_shards=args.keep_shards)
    processes = f" ({workers.world_size} processes)" if workers.world_size > 1 else ""
    print(f"wrote {writer.records_done} embeddings of dimension {writer.index['dim']} to {output}{processes}")
    return EXIT_OK


def _read_index(folder: Path) -> dict:
    """The run's index as the main process left it (none yet: nothing is in shards)."""
    path = folder / EMBEDDING_INDEX_NAME
    if not path.exists():
        return {"records": 0, "complete": False}
    return json.loads(path.read_text(encoding="utf-8"))


def _assemble_covered(run: _Run, writer: EmbeddingShardWriter) -> None:
    """Assemble, block by block, every block from the writer's end whose records all sit in parts."""
    size = run.args.shard_size
    while writer.records_done < run.total:
        start = writer.records_done
        # blocks start where the run started, so each block becomes exactly one shard
        stop = min(start + size - (start - run.records_done) % size, run.total)
        if not run.parts.covers(start, stop):
            return
        run.parts.assemble(writer, stop)


def _blocks(run: _Run, items: Iterator) -> Iterator[list]:
    """The records still to compute, in blocks of `--shard-size` consecutive input positions (skipping records in
    shards or parts)."""
    done = run.parts.done()
    pending = itertools.islice(items, run.records_done, None)
    for block in batches(pending, run.args.shard_size):
        block = [item for item in block if item.index not in done]
        if block:
            yield block


def _embed_records(run: _Run, writer, input_path: Path, input_format: str, source: ModelSource, pair: bool) -> bool:
    """Embed this process's share of the records no shard or part holds; True when `--max-batches` stopped it."""
    import torch

    args, workers = run.args, run.workers
    model = source.load(workers.device)
    items = read_items(input_path, input_format, args, pair)
    remaining = run.total - run.records_done - len(run.parts.done())
    show = workers.is_main and not args.no_progress
    batch_number = 0  # over the whole plan, so that processes take turns with the longest batches of each block
    done_here = 0
    with progress(remaining, "embedding", not show) as bar:
        for block in _blocks(run, items):
            features = encode_items(run.processor, block, run.architecture, args)
            counts, lengths = zip(*(sample_token_lengths(feature) for feature in features))
            plan = plan_batches(lengths, args.max_tokens, args.batch_size, counts)
            mine = [plan[number] for number in workers.share(len(plan), offset=batch_number)]
            batch_number += len(plan)
            results = _BlockResults(args.fusion_weights)
            try:
                for batch in mine:
                    inputs = run.processor.pad([features[i] for i in batch], architecture=run.architecture)
                    inputs = move_to_device(inputs, workers.device)
                    with torch.inference_mode(), autocast(workers.device, args.autocast):
                        outputs = model(**inputs)
                    results.add([block[i] for i in batch], outputs, inputs.get("segment_sample_index"))
                    bar.update(len(batch) * workers.world_size)
                    done_here += 1
                    if args.max_batches is not None and done_here >= args.max_batches:
                        break
            finally:
                # keep every finished record, also when a batch failed or the run was interrupted
                with contextlib.suppress(Exception):
                    results.write(run.parts)
            if writer is not None:
                run.parts.refresh()
                _assemble_covered(run, writer)
            if args.max_batches is not None and done_here >= args.max_batches:
                return True
    return False


class _BlockResults:
    """What one process computed in one block, in the order it ran, until written as a part."""

    def __init__(self, keep_weights: bool) -> None:
        self.keep_weights = keep_weights
        self.items: list = []
        self.embeddings: list[np.ndarray] = []
        self.weights: list[np.ndarray] = []

    def add(self, items: list, outputs, segment_sample_index) -> None:
        self.items += items
        self.embeddings.append(outputs.pooler_output.float().cpu().numpy())
        if self.keep_weights:
            self.weights += _per_sample_weights(outputs, segment_sample_index, len(items))

    def write(self, parts: EmbeddingParts) -> None:
        if not self.items:
            return
        parts.write(
            [item.index for item in self.items],
            [item.id for item in self.items],
            np.concatenate(self.embeddings),
            self.weights if self.keep_weights else None,
        )
        self.items = []


def _per_sample_weights(outputs, segment_sample_index, samples: int) -> list[np.ndarray]:
    """Per sample its `(units, backbones)` fusion weights, padding removed; a complex's segments one after another,
    in the order the processor lays them out (ligand side first). At `level="sequence"` one row per segment."""
    weights = outputs.fusion_weights.float().cpu()
    if weights.dim() == 2:  # level="sequence": one weight vector per segment
        rows = [row.unsqueeze(0).numpy() for row in weights]
    else:
        lengths = outputs.unit_mask.sum(dim=1).tolist()
        rows = [weights[row, : int(length)].numpy() for row, length in enumerate(lengths)]
    if segment_sample_index is None:
        return rows
    grouped: list[list[np.ndarray]] = [[] for _ in range(samples)]
    for row, sample in zip(rows, segment_sample_index.tolist()):
        grouped[sample].append(row)
    return [np.concatenate(segments) for segments in grouped]
