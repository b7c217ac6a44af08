"""Building a feature cache: run each frozen backbone once per unique segment of a dataset, store the states in shards.

Segments run longest first in token-budget batches (`hf_metaembed.batching`). An interrupted build keeps its finished
shards, and a second call with the same model continues where it stopped (shards planned deterministically, missing
or corrupted ones recomputed). Under a launcher (`accelerate launch`, `torchrun`) every process builds its share of
the shards into the same folder (`hf_metaembed.distributed`).
"""

import contextlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..batching import DEFAULT_MAX_TOKENS, move_to_device, plan_batches, token_budgets
from ..distributed import Workers, current_workers
from ..io.files import atomic_write_json, file_sha256, remove_leftover_temporaries
from ..modeling.modeling_metaembed import MetaEmbedModel
from ..modeling.processing_metaembed import MetaEmbedProcessor
from .errors import CacheFingerprintError
from .fingerprint import cacheable_base_model, fingerprint_differences, model_fingerprint
from .lock import CacheWriteLock
from .segments import sample_segments, segment_key, segment_length
from .store import INDEX_NAME, FeatureCache, new_index, read_index, remove_orphan_shards, shard_segments, write_shard

# what each process but the main one of a multi-process build finished, until the main process lists it in the index
_SIDECAR = "index-rank-{}.json"
_SIDECAR_GLOB = "index-rank-*.json"
_PROGRESS = "Caching backbone states"


def _encode_missing(processor: MetaEmbedProcessor, wanted: dict[str, tuple], missing: set[str]) -> dict[str, dict]:
    """Tokenize each missing segment alone, exactly as the processor encodes it inside a batch (a chain that repeats
    across the dataset is tokenized once, and no other chain of its sample is).

    Returns `{key: segment}` with the processor's per-segment `input_ids`, `token_unit_index` and `num_units`.
    """
    encoded: dict[str, dict] = {}
    stats: dict[str, int] = {}
    for key in sorted(missing, key=lambda key: wanted[key][1]):
        architecture, sample, side, chains = wanted[key]
        where = processor.segment_label(architecture, side)
        encoded[key] = processor.encode_segment(chains, sample=sample, where=where, stats=stats)
    processor.warn_about(stats, stacklevel=4)
    return encoded


def _bytes_per_unit(base: MetaEmbedModel) -> int:
    """Bytes one unit of one segment takes across all backbones' stored states (used to size shards)."""
    total = 0
    for index, (backbone, dim) in enumerate(zip(base.backbones, base.config.backbone_hidden_sizes)):
        parameter = next(backbone.parameters(), None)
        itemsize = parameter.element_size() if parameter is not None else 4
        total += dim * base.reader.stored_layers(index) * itemsize
    return total


def _plan_shards(keys: list[str], units: dict[str, int], unit_bytes: int, shard_bytes: int) -> list[list[str]]:
    """Split `keys` (already in build order) into consecutive shards of about `shard_bytes` each (sizes estimated from
    the untruncated lengths: deterministic, so a resumed build plans the same shards)."""
    shards, current, size = [], [], 0
    for key in keys:
        current.append(key)
        size += units[key] * unit_bytes
        if size >= shard_bytes:
            shards.append(current)
            current, size = [], 0
    if current:
        shards.append(current)
    return shards


def _open_for_build(directory: Path, fingerprint: dict, overwrite: bool, verify_existing: bool) -> dict:
    """The index to extend: a fresh one, or the existing one with unusable shards dropped (to be recomputed)."""
    fresh = new_index(fingerprint)
    remove_leftover_temporaries(directory)  # a shard or index a killed build was writing
    if not (directory / INDEX_NAME).exists():
        return fresh
    if overwrite:
        for shard in directory.glob("shard-*.safetensors"):
            shard.unlink()
        return fresh
    index = read_index(directory)
    differences = fingerprint_differences(index["fingerprint"], fingerprint)
    if differences:
        raise CacheFingerprintError(
            f"{directory} holds a feature cache built for a different model or processor:\n  "
            + "\n  ".join(differences)
            + "\npass overwrite=True to replace it, or choose another output directory"
        )
    for name, record in list(index["shards"].items()):
        path = directory / name
        problem = None
        if not path.is_file():
            problem = "missing"
        elif path.stat().st_size != record["bytes"]:
            problem = "truncated"
        elif verify_existing and file_sha256(path) != record["sha256"]:
            problem = "corrupted (checksum mismatch)"
        if problem:
            warnings.warn(f"shard {name} of cache {directory} is {problem}; recomputing its segments", stacklevel=3)
            del index["shards"][name]
            path.unlink(missing_ok=True)
    return index


def _sidecars(directory: Path) -> list[Path]:
    return sorted(directory.glob(_SIDECAR_GLOB))


def _adopt_rank_shards(directory: Path) -> None:
    """Add the shards that other processes of a multi-process build wrote (listed in their `index-rank-N.json`) to
    the index, then delete those lists. A shard listed with a size it does not have is left out (and recomputed)."""
    sidecars = _sidecars(directory)
    if not sidecars or not (directory / INDEX_NAME).exists():
        for sidecar in sidecars:
            sidecar.unlink()
        return
    index = read_index(directory)
    for sidecar in sidecars:
        for name, record in json.loads(sidecar.read_text(encoding="utf-8")).items():
            path = directory / name
            if path.is_file() and path.stat().st_size == record["bytes"]:
                index["shards"][name] = record
    atomic_write_json(directory / INDEX_NAME, index)
    for sidecar in sidecars:
        sidecar.unlink()


def _compute_shard(base, processor, wanted: dict, shard_keys: list[str], batching: tuple, bar):
    """The tensors of one shard (`"<key>/<backbone>"`: stored states) and each segment's stored units; segments
    run longest first in token-budget batches (`batching`: max_tokens and batch_size)."""
    # tokenized one shard at a time, so a dataset of any size needs the tokens of one shard in memory
    encoded = _encode_missing(processor, wanted, set(shard_keys))
    stored_units = {key: base.reader.stored_units(encoded[key]["num_units"]) for key in shard_keys}
    lengths = [tuple(len(ids) for ids in encoded[key]["input_ids"]) for key in shard_keys]
    device = next(base.parameters()).device
    tensors: dict[str, torch.Tensor] = {}
    for batch in plan_batches(lengths, *batching):
        batch_keys = [shard_keys[position] for position in batch]
        inputs = processor.pad([{"segments": [encoded[key]]} for key in batch_keys], architecture="single")
        inputs = move_to_device(inputs, device)
        with torch.no_grad():
            states = base.reader.read_backbones(
                base.backbones,
                inputs["input_ids"],
                inputs["attention_mask"],
                inputs["token_unit_index"],
                inputs["unit_mask"].shape[1],
            )
        for row, key in enumerate(batch_keys):
            for backbone, backbone_states in enumerate(states):
                tensors[f"{key}/{backbone}"] = backbone_states[row, : stored_units[key]].cpu().contiguous().clone()
        bar.update(len(batch_keys))
    return tensors, stored_units


def build_feature_cache(
    model,
    processor: MetaEmbedProcessor,
    output_dir: str | os.PathLike,
    *,
    sequences: Sequence[str] | None = None,
    ligand: Sequence[Sequence[str]] | None = None,
    receptor: Sequence[Sequence[str]] | None = None,
    architecture: str | Sequence[str] | None = None,
    batch_size: int = 64,
    max_tokens: int | Sequence[int] = DEFAULT_MAX_TOKENS,
    shard_size_mb: float = 256.0,
    overwrite: bool = False,
    verify_existing: bool = True,
    progress: bool = True,
    lock_timeout: float | None = None,
    distributed: bool = False,
) -> FeatureCache:
    """Run every frozen backbone once over each unique segment of a dataset and store the states in `output_dir`.

    With `distributed=True` under `accelerate launch` or `torchrun`, call it in every process (with the same data):
    the processes deal the shards out between them and write them into the one folder, each on its own GPU when the
    model is on one; the main process holds the folder's write lock and lists every shard in the index. A build killed
    in any process is resumed by calling it again (with any number of processes): shards any process finished are
    kept. (Without `distributed`, processes that each call it build one after another, as separate writers.)

    Args:
        model: a MetaEmbed model (any task class); its backbones must be frozen (see `cacheable_base_model`).
        processor: the model's `MetaEmbedProcessor`.
        output_dir: cache folder; an existing cache for the same fingerprint is extended or resumed (finished shards
            kept, missing or corrupted ones recomputed); one for another fingerprint is refused unless `overwrite`.
        sequences: plain sequences (architecture `single`), or
        ligand, receptor: per complex the chains of each side (pair architectures).
        architecture: the architecture(s) whose segments to cache; defaults to the model's. A list caches the union
            (a chain cached for `hp` also serves a one-chain side of `ec`).
        batch_size: at most this many segments per backbone forward pass.
        max_tokens: padded tokens per backbone forward pass, one budget for every backbone or one per backbone;
            segments run longest first in batches within it (`hf_metaembed.batching`), which bounds peak memory.
        shard_size_mb: approximate size of each shard file (smaller under several processes, so each has work).
        verify_existing: re-check the sha256 of existing shards before resuming.
        progress: show a tqdm progress bar.
        lock_timeout: seconds to wait while another build writes to `output_dir` (None: until it is free; 0: fail
            at once with `hf_metaembed.cache.lock.CacheLockedError`).
        distributed: share the work with the other processes of a launched job (see above); every process must call
            it. No effect in a process started without a launcher.

    Returns:
        The `FeatureCache`; its `build_summary` counts segments read, unique, reused and computed.
    """
    base = cacheable_base_model(model)
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    token_budgets(max_tokens, base.config.num_backbones)
    if architecture is None or isinstance(architecture, str):
        architectures = [architecture or base.config.architecture]
    else:
        architectures = list(architecture)
    unit_types = list(processor.unit_types)
    wanted: dict[str, tuple] = {}  # key -> (architecture, first sample holding it, side, chains)
    lengths: dict[str, int] = {}  # key -> units before any truncation, to order and size shards before tokenizing
    occurrences = 0
    for arch in architectures:
        for sample, segments in enumerate(sample_segments(arch, sequences, ligand, receptor)):
            for side, chains in segments:
                occurrences += 1
                key = segment_key(chains, unit_types)
                if key not in wanted:
                    wanted[key] = (arch, sample, side, chains)
                    lengths[key] = segment_length(chains, unit_types)
    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    fingerprint = model_fingerprint(base, processor)
    device = next(base.parameters()).device
    workers = current_workers("cpu" if device.type == "cpu" else "auto") if distributed else Workers(device=device)
    if workers.world_size > 1 and device.type == "cuda" and device != workers.device:
        base.to(workers.device)  # each process on its own GPU
    with contextlib.ExitStack() as held:
        index = None
        if workers.is_main:
            held.enter_context(CacheWriteLock(directory, timeout=lock_timeout))
            _adopt_rank_shards(directory)  # what the other processes of a killed build finished
            remove_orphan_shards(directory)
            index = _open_for_build(directory, fingerprint, overwrite, verify_existing)
            atomic_write_json(directory / INDEX_NAME, index)
        workers.barrier()  # every process plans from the same index, read before anyone writes a shard
        index = index if index is not None else read_index(directory)
        done = set()
        for name in index["shards"]:
            done.update(shard_segments(directory / name))
        workers.barrier()
        missing = {key for key in wanted if key not in done}
        # longest first: similar lengths share a batch (little padding) and an out-of-memory error shows up at once
        order = sorted(missing, key=lambda key: (-lengths[key], key))
        per_segment = {key: base.reader.stored_units(lengths[key]) for key in order}
        shard_bytes = int(shard_size_mb * 2**20)
        if workers.world_size > 1:  # enough shards for every process to take turns
            total = sum(per_segment[key] for key in order) * _bytes_per_unit(base)
            shard_bytes = max(1, min(shard_bytes, total // (4 * workers.world_size)))
        plan = _plan_shards(order, per_segment, _bytes_per_unit(base), shard_bytes)
        numbers = [int(name[6:11]) for name in index["shards"]]
        first_number = max(numbers) + 1 if numbers else 0
        mine = list(workers.share(len(plan)))
        written: dict[str, dict] = {}
        show = progress and workers.is_main and bool(mine)
        bar = tqdm(total=sum(len(plan[i]) for i in mine), desc=_PROGRESS, unit="segment", disable=not show)
        for offset in mine:
            shard_keys = plan[offset]
            tensors, units = _compute_shard(base, processor, wanted, shard_keys, (max_tokens, batch_size), bar)
            name = f"shard-{first_number + offset:05d}.safetensors"
            written[name] = write_shard(directory, name, tensors, {key: units[key] for key in shard_keys})
            if workers.is_main:
                index["shards"][name] = written[name]
                atomic_write_json(directory / INDEX_NAME, index)
            else:  # the main process lists these in the index at the end, or when it resumes after a crash
                atomic_write_json(directory / _SIDECAR.format(workers.rank), written)
        bar.close()
        workers.barrier()
        if workers.is_main:
            _adopt_rank_shards(directory)
        workers.barrier()  # the index lists every shard before any process reads the cache
    cache = FeatureCache(directory)
    if verify_existing:  # checked when the build opened them, or written just now
        cache._verified.update([*index["shards"], *written])
    cache.build_summary = {
        "segments_read": occurrences,
        "unique_segments": len(wanted),
        "reused": len(wanted) - len(missing),
        "computed": len(missing),
        "shards_written": len(plan),
    }
    return cache


__all__ = ["build_feature_cache"]
