"""Building a feature cache: run each frozen backbone once per unique segment of a dataset, store the states in shards.

An interrupted build keeps its finished shards, and a second call with the same model continues where it stopped
(shards planned deterministically, missing or corrupted ones recomputed).
"""

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..io.files import atomic_write_json, file_sha256, remove_leftover_temporaries
from ..modeling.configuration_metaembed import backbone_num_layers
from ..modeling.modeling_metaembed import MetaEmbedModel
from ..modeling.processing_metaembed import MetaEmbedProcessor
from .errors import CacheFingerprintError
from .fingerprint import cacheable_base_model, fingerprint_differences, model_fingerprint
from .lock import holds_write_lock
from .segments import sample_segments, segment_key, segment_length
from .store import INDEX_NAME, FeatureCache, new_index, read_index, shard_segments, write_shard


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
    config = base.config
    total = 0
    for index, (backbone, dim) in enumerate(zip(base.backbones, config.backbone_hidden_sizes)):
        parameter = next(backbone.parameters(), None)
        itemsize = parameter.element_size() if parameter is not None else 4
        layers = 1
        if config.level == "unit" and config.backbone_layers[index] == "mix":
            layers = backbone_num_layers(config.get_backbone_config(index)) + 1
        total += dim * layers * itemsize
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


@holds_write_lock  # one writer per folder; adds lock_timeout= (see cache/lock.py)
def build_feature_cache(
    model,
    processor: MetaEmbedProcessor,
    output_dir: str | os.PathLike,
    *,
    sequences: Sequence[str] | None = None,
    ligand: Sequence[Sequence[str]] | None = None,
    receptor: Sequence[Sequence[str]] | None = None,
    architecture: str | Sequence[str] | None = None,
    batch_size: int = 8,
    shard_size_mb: float = 256.0,
    overwrite: bool = False,
    verify_existing: bool = True,
    progress: bool = True,
) -> FeatureCache:
    """Run every frozen backbone once over each unique segment of a dataset and store the states in `output_dir`.

    Args:
        model: a MetaEmbed model (any task class); its backbones must be frozen (see `cacheable_base_model`).
        processor: the model's `MetaEmbedProcessor`.
        output_dir: cache folder; an existing cache for the same fingerprint is extended or resumed (finished shards
            kept, missing or corrupted ones recomputed); one for another fingerprint is refused unless `overwrite`.
        sequences: plain sequences (architecture `single`), or
        ligand, receptor: per complex the chains of each side (pair architectures).
        architecture: the architecture(s) whose segments to cache; defaults to the model's. A list caches the union
            (a chain cached for `hp` also serves a one-chain side of `ec`).
        batch_size: segments per backbone forward pass (segments are sorted by length to limit padding).
        shard_size_mb: approximate size of each shard file.
        verify_existing: re-check the sha256 of existing shards before resuming.
        progress: show a tqdm progress bar.

    Returns:
        The `FeatureCache`; its `build_summary` counts segments read, unique, reused and computed.
    """
    base = cacheable_base_model(model)
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
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
    index = _open_for_build(directory, model_fingerprint(base, processor), overwrite, verify_existing)
    atomic_write_json(directory / INDEX_NAME, index)
    done = set()
    for name in index["shards"]:
        done.update(shard_segments(directory / name))
    missing = {key for key in wanted if key not in done}
    # longest first: similar lengths share a batch (little padding) and an out-of-memory error shows up at once
    order = sorted(missing, key=lambda key: (-lengths[key], key))
    per_segment = lengths if base.config.level == "unit" else dict.fromkeys(order, 1)
    plan = _plan_shards(order, per_segment, _bytes_per_unit(base), int(shard_size_mb * 2**20))
    numbers = [int(name[6:11]) for name in index["shards"]]
    first_number = max(numbers) + 1 if numbers else 0
    device = next(base.parameters()).device
    bar = tqdm(total=len(order), desc="Caching backbone states", unit="segment", disable=not (progress and order))
    for offset, shard_keys in enumerate(plan):
        # tokenized one shard at a time, so a dataset of any size needs the tokens of one shard in memory
        encoded = _encode_missing(processor, wanted, set(shard_keys))
        stored_units = {key: encoded[key]["num_units"] if base.config.level == "unit" else 1 for key in shard_keys}
        tensors: dict[str, torch.Tensor] = {}
        for start in range(0, len(shard_keys), batch_size):
            batch_keys = shard_keys[start : start + batch_size]
            batch = processor.pad([{"segments": [encoded[key]]} for key in batch_keys], architecture="single")
            with torch.no_grad():
                states = base.compute_backbone_states(
                    batch["input_ids"].to(device),
                    batch["attention_mask"].to(device),
                    batch["token_unit_index"].to(device),
                    batch["unit_mask"].shape[1],
                )
            for row, key in enumerate(batch_keys):
                for backbone, backbone_states in enumerate(states):
                    tensors[f"{key}/{backbone}"] = backbone_states[row, : stored_units[key]].cpu().contiguous().clone()
            bar.update(len(batch_keys))
        name = f"shard-{first_number + offset:05d}.safetensors"
        index["shards"][name] = write_shard(directory, name, tensors, {key: stored_units[key] for key in shard_keys})
        atomic_write_json(directory / INDEX_NAME, index)
    bar.close()
    cache = FeatureCache(directory)
    cache._verified.update(name for name in index["shards"] if verify_existing)
    cache.build_summary = {
        "segments_read": occurrences,
        "unique_segments": len(wanted),
        "reused": len(wanted) - len(missing),
        "computed": len(missing),
        "shards_written": len(plan),
    }
    return cache


__all__ = ["build_feature_cache"]
