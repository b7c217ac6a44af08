"""Frozen-feature cache: run each frozen backbone once per unique segment, then train fusion and heads from disk.

A segment is what one backbone reads: a sequence (`single`), a chain (`hp`), a side with its chains joined (`ec`,
`pad`) or a whole complex joined (`sc`). Building a cache runs every backbone once over each unique segment of a
dataset (deduplicated by content) and stores its unit-level states exactly as `MetaEmbedModel.compute_backbone_states`
returns them (after layer selection and token-to-unit alignment, before fusion) in safetensors shards::

    cache_dir/index.json                 fingerprint of model and processor, shard list with sha256 checksums
    cache_dir/shard-00000.safetensors    tensors "<segment key>/<backbone>": (units, d_i); header lists its keys

Each shard is written to a temporary name and renamed, and the index is rewritten (atomically) after every shard,
so an interrupted build keeps its finished shards and a second call continues where it stopped. Shards are read
back memory-mapped, one segment at a time, so a cache larger than memory trains fine.

    cache = build_feature_cache(model, processor, "cache/", ligand=ligands, receptor=receptors, architecture="hp")
    cache = load_feature_cache("cache/", model, processor)       # refuses a cache built for another model
    dataset = CachedFeatureDataset(cache, ligand=ligands, receptor=receptors, labels=labels, architecture="hp")
    loader = DataLoader(dataset, batch_size=8, collate_fn=CachedFeatureCollator())
    for batch in loader:
        loss = model(**batch).loss          # batch holds backbone_states, unit_mask, segment indices, labels

Not a model file: it may use numpy, safetensors and tqdm, and the model files never import it.
"""

import argparse
import csv
import hashlib
import json
import os
import sys
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..io.records import atomic_save_safetensors, atomic_write_json, one_line
from ..modeling.configuration_metaembed import backbone_num_layers
from ..modeling.modeling_metaembed import MetaEmbedModel
from ..modeling.processing_metaembed import PAIR_LAYOUTS, MetaEmbedProcessor, layout_segments

CACHE_FORMAT = "hf_metaembed.feature_cache"
CACHE_FORMAT_VERSION = 1
# bump whenever token-to-unit alignment or layer selection changes what `compute_backbone_states` returns
ALIGNMENT_VERSION = 1
INDEX_NAME = "index.json"
_CHUNK = 1 << 23


class FeatureCacheError(ValueError):
    """A feature cache that cannot be built or used as asked; the message says why and what to do."""


class UncacheableModelError(FeatureCacheError):
    """The model's backbone states change during training, so they cannot be cached."""


class CacheFingerprintError(FeatureCacheError):
    """The cache was built for another model, backbone, layer selection, dtype or tokenizer."""


class CorruptShardError(FeatureCacheError):
    """A shard is missing, truncated or altered (its checksum differs from the one in the index)."""


class MissingSegmentError(FeatureCacheError):
    """A sample needs a segment that the cache does not hold."""


# ---------------------------------------------------------------------------------------------- segments


def _check_chain(chain, sample: int, where: str) -> str:
    if not isinstance(chain, str):
        raise TypeError(f"sample {sample}{where}: expected a string, got {type(chain).__name__} ({chain!r:.40})")
    return chain


def sample_segments(
    architecture: str,
    sequences: Sequence[str] | None = None,
    ligand: Sequence[Sequence[str]] | None = None,
    receptor: Sequence[Sequence[str]] | None = None,
) -> list[list[tuple[int, list[str]]]]:
    """Per sample, its segments as `(side, chains)` in the order `MetaEmbedProcessor` emits them.

    `single`: one segment `[sequence]`; `sc`: ligand and receptor chains joined; `ec`/`pad`: one per side; `hp`: one
    per chain. Side is 0 (ligand) or 1 (receptor).
    """
    if architecture == "single":
        if sequences is None or ligand is not None or receptor is not None:
            raise ValueError("architecture 'single' reads plain sequences: pass sequences=[...], not ligand/receptor")
        sequences = [sequences] if isinstance(sequences, str) else sequences
        return [[(0, [_check_chain(s, i, "")])] for i, s in enumerate(sequences)]
    if architecture not in PAIR_LAYOUTS:
        raise ValueError(
            f"architecture {architecture!r} has no known segment layout; choose one of: "
            f"{', '.join(['single', *PAIR_LAYOUTS])}"
        )
    if ligand is None or receptor is None or sequences is not None:
        raise ValueError(f"architecture {architecture!r} compares two sides: pass ligand=[[chain, ...], ...] and "
                         "receptor=[[chain, ...], ...]")  # fmt: skip
    if len(ligand) != len(receptor):
        raise ValueError(
            f"ligand lists {len(ligand)} complexes but receptor lists {len(receptor)}; give one per sample"
        )
    samples = []
    for index, sides in enumerate(zip(ligand, receptor)):
        checked = []
        for name, chains in zip(("ligand", "receptor"), sides):
            if isinstance(chains, str) or not isinstance(chains, Sequence) or not chains:
                raise ValueError(
                    f"sample {index}: {name} must be a non-empty list of chain strings, got {chains!r:.60}"
                )
            checked.append([_check_chain(c, index, f" ({name})") for c in chains])
        samples.append(layout_segments(*checked, architecture))
    return samples


def segment_key(chains: Sequence[str], unit_types: Sequence[str]) -> str:
    """Content key of a segment: equal for chains the processor reads identically (case and spacing of protein
    sequences, spacing of text), different whenever the chains or their split into chains differ."""
    if "word" in unit_types:
        canonical = [" ".join(chain.split()) for chain in chains]
    else:
        canonical = ["".join(chain.split()).upper() for chain in chains]
    return hashlib.sha256(json.dumps(canonical).encode("utf-8")).hexdigest()[:32]


# ------------------------------------------------------------------------------------------- fingerprint

# config fields deciding how backbones read long segments (sliding windows), hence their states
_WINDOW_FIELDS = ("window_size", "window_overlap", "window_combine")
_PROCESSOR_FIELDS_WITHOUT_EFFECT = {"processor_class", "backbone_names", "architecture", "per_unit_labels", "auto_map"}
_WEIGHT_HASHES: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()


def weights_sha256(module: torch.nn.Module) -> str:
    """sha256 over every tensor of `module.state_dict()` (names, dtypes, shapes and bytes), memoised per module until
    one of its tensors is replaced or modified in place."""
    state = module.state_dict()
    signature = tuple((name, t.data_ptr(), t._version, t.dtype, tuple(t.shape)) for name, t in state.items())
    memo = _WEIGHT_HASHES.get(module)
    if memo is not None and memo[0] == signature:
        return memo[1]
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach()
        if tensor.is_meta:
            raise FeatureCacheError(f"weight {name!r} is on the meta device (not loaded): load the model fully first")
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    _WEIGHT_HASHES[module] = (signature, digest.hexdigest())
    return digest.hexdigest()


def tokenizer_sha256(tokenizer) -> str:
    """sha256 of what decides a tokenizer's ids: its vocabulary, special tokens and case/prefix-space handling."""
    payload = {
        "vocab": sorted(tokenizer.get_vocab().items(), key=lambda item: (item[1], item[0])),
        "special_tokens": sorted(tokenizer.all_special_tokens),
        "do_lower_case": getattr(tokenizer, "do_lower_case", None),
        "add_prefix_space": getattr(tokenizer, "add_prefix_space", None),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


def _base_model(model) -> MetaEmbedModel:
    """The `MetaEmbedModel` inside a MetaEmbed task model (or a PEFT wrapper of one)."""
    seen = model
    for _ in range(4):
        if isinstance(seen, MetaEmbedModel):
            return seen
        if hasattr(seen, "get_base_model"):
            seen = seen.get_base_model()
        elif hasattr(seen, "metaembed"):
            seen = seen.metaembed
        else:
            break
    raise TypeError(f"expected a MetaEmbed model (MetaEmbedModel or MetaEmbedFor*), got {type(model).__name__}")


def cacheable_base_model(model) -> MetaEmbedModel:
    """The `MetaEmbedModel` of `model`, after checking its backbone states can be cached exactly.

    Raises `UncacheableModelError` when a backbone is trainable, or at `level="sequence"` when a learned part (an
    attention pooling of tokens or a `"mix"` of layers) sits before fusion.
    """
    base = _base_model(model)
    config = base.config
    for index, backbone in enumerate(base.backbones):
        if any(parameter.requires_grad for parameter in backbone.parameters()):
            raise UncacheableModelError(
                f"backbone {index} ({config.backbone_names[index]}) is trainable (unfrozen or with adapters): its "
                "states change while training and cannot be cached; call model.freeze_backbones() or train online"
            )
    if config.level == "sequence":
        if config.pooling == "attention":
            raise UncacheableModelError(
                "level='sequence' with pooling='attention' pools each backbone's tokens with learned weights before "
                "fusion, so the cached vectors would go stale; use pooling='mean' or 'max', or level='unit'"
            )
        mixed = [i for i, layer in enumerate(config.backbone_layers) if layer == "mix"]
        if mixed:
            raise UncacheableModelError(
                f"level='sequence' with a 'mix' layer (backbones {mixed}) mixes layers with learned weights before "
                "pooling, so the cached vectors would go stale; pick one layer per backbone, or use level='unit'"
            )
    return base


def model_fingerprint(model, processor: MetaEmbedProcessor) -> dict:
    """Everything that decides the cached states: per backbone its name, revision, weights hash, dtype, layer and
    tokenizer; the alignment settings; the processor settings; and `ALIGNMENT_VERSION`."""
    base = cacheable_base_model(model)
    config = base.config
    if len(processor.tokenizers) != config.num_backbones:
        raise FeatureCacheError(
            f"the processor has {len(processor.tokenizers)} tokenizers for {config.num_backbones} backbones; use the "
            "processor built for this model"
        )
    backbones = []
    for index, backbone in enumerate(base.backbones):
        parameter = next(backbone.parameters(), None)
        backbones.append(
            {
                "name": config.backbone_names[index],
                "revision": config.backbone_revisions[index],
                "model_type": backbone.config.model_type,
                "weights_sha256": weights_sha256(backbone),
                "dtype": str(parameter.dtype).removeprefix("torch.") if parameter is not None else None,
                "layer": config.backbone_layers[index],
                "tokenizer_sha256": tokenizer_sha256(processor.tokenizers[index]),
            }
        )
    alignment = {
        "alignment_version": ALIGNMENT_VERSION,
        "level": config.level,
        "subword_pooling": config.subword_pooling,
    }
    alignment.update({field: getattr(config, field, None) for field in _WINDOW_FIELDS})
    if config.level == "sequence":
        alignment.update(pooling=config.pooling, pool_special_tokens=config.pool_special_tokens)
    # every processor setting but those that cannot change a segment's tokens (a new setting counts by default)
    settings = {k: v for k, v in processor.to_dict().items() if k not in _PROCESSOR_FIELDS_WITHOUT_EFFECT}
    return {"backbones": backbones, "alignment": alignment, "processor": settings}


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        flat = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else key))
        return flat
    if isinstance(value, list) and any(isinstance(item, dict) for item in value):
        flat = {f"{prefix}.count": len(value)}
        for index, item in enumerate(value):
            flat.update(_flatten(item, f"{prefix}[{index}]"))
        return flat
    return {prefix: value}


def fingerprint_differences(cached: dict, current: dict) -> list[str]:
    """Human-readable lines `field: cache has X, this model has Y` for every field that differs."""
    old, new = _flatten(cached), _flatten(current)
    lines = []
    for field in sorted(set(old) | set(new)):
        if old.get(field, "<absent>") != new.get(field, "<absent>"):
            lines.append(
                f"{field}: cache has {old.get(field, '<absent>')!r}, this model has {new.get(field, '<absent>')!r}"
            )
        if len(lines) == 12:
            lines.append("...")
            break
    return lines


# ----------------------------------------------------------------------------------------------- files


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_shard(directory: Path, name: str, tensors: dict[str, torch.Tensor], segments: dict[str, int]) -> dict:
    """Write one shard under a temporary name, then rename it: a shard file either is complete or does not exist."""
    path = directory / name
    atomic_save_safetensors(tensors, path, metadata={"segments": json.dumps(segments, sort_keys=True)})
    return {"sha256": _file_sha256(path), "bytes": path.stat().st_size, "segments": len(segments)}


def _read_index(directory: Path) -> dict:
    path = directory / INDEX_NAME
    if not path.is_file():
        raise FeatureCacheError(
            f"{directory} is not a feature cache (no {INDEX_NAME}); build one with build_feature_cache"
        )
    try:
        with open(path, encoding="utf-8") as handle:
            index = json.load(handle)
    except json.JSONDecodeError as error:
        raise FeatureCacheError(f"{path} is unreadable ({error}); rebuild the cache with overwrite=True") from error
    if index.get("format") != CACHE_FORMAT or index.get("format_version") != CACHE_FORMAT_VERSION:
        raise FeatureCacheError(
            f"{path} is format {index.get('format')!r} version {index.get('format_version')!r}; this library reads "
            f"{CACHE_FORMAT!r} version {CACHE_FORMAT_VERSION}: rebuild the cache with overwrite=True"
        )
    return index


def _shard_segments(path: Path) -> dict[str, int]:
    """`{segment key: units}` from a shard's header (no tensor is read)."""
    if not path.is_file():
        raise CorruptShardError(f"shard {path.name} of cache {path.parent} is missing; run the build again")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return json.loads(handle.metadata()["segments"])
    except (SafetensorError, OSError, KeyError, TypeError, json.JSONDecodeError) as error:
        raise CorruptShardError(
            f"shard {path.name} of cache {path.parent} has an unreadable header ({error}); run the build again to "
            "recompute it"
        ) from error


# ---------------------------------------------------------------------------------------------- reading


class FeatureCache:
    """Read access to a built cache: `cache[key]` gives one segment's per-backbone states, read memory-mapped.

    Shards are opened lazily (at most `max_open_shards` at once) and, with `verify_checksums`, each one's sha256 is
    checked against the index the first time it is read in a process; a mismatch raises `CorruptShardError`.
    Opening reads only `index.json` and the shard headers. Use `load_feature_cache` to also check the fingerprint.
    """

    def __init__(self, path: str | os.PathLike, *, verify_checksums: bool = True, max_open_shards: int = 32) -> None:
        self.path = Path(path)
        index = _read_index(self.path)
        self.fingerprint: dict = index["fingerprint"]
        self.shards: dict[str, dict] = index["shards"]
        self.verify_checksums = verify_checksums
        self.max_open_shards = max_open_shards
        self.build_summary: dict | None = None
        self._handles: OrderedDict = OrderedDict()
        self._verified: set[str] = set()
        self._locations: dict[str, tuple[str, int]] = {}
        for name, record in self.shards.items():
            self._check_size(name, record)
            for key, units in _shard_segments(self.path / name).items():
                self._locations[key] = (name, units)

    @property
    def num_backbones(self) -> int:
        return len(self.fingerprint["backbones"])

    @property
    def unit_types(self) -> list[str]:
        return list(self.fingerprint["processor"]["unit_types"])

    def __len__(self) -> int:
        return len(self._locations)

    def __contains__(self, key: str) -> bool:
        return key in self._locations

    def keys(self) -> list[str]:
        return list(self._locations)

    def num_units(self, key: str) -> int:
        """Units stored for segment `key` (1 at `level="sequence"`)."""
        return self._locations[key][1]

    def _check_size(self, name: str, record: dict) -> None:
        path = self.path / name
        if not path.is_file():
            raise CorruptShardError(
                f"shard {name} of cache {self.path} is missing; run the build again to recompute it"
            )
        size = path.stat().st_size
        if size != record["bytes"]:
            raise CorruptShardError(
                f"shard {name} of cache {self.path} is {size} bytes but the index records {record['bytes']} "
                "(truncated or altered); run the build again to recompute it"
            )

    def verify_shard(self, name: str) -> None:
        """Check a shard's size and sha256 against the index; raise `CorruptShardError` naming it on a mismatch."""
        record = self.shards[name]
        self._check_size(name, record)
        actual = _file_sha256(self.path / name)
        if actual != record["sha256"]:
            raise CorruptShardError(
                f"shard {name} of cache {self.path} is corrupted: sha256 {actual[:16]}... differs from "
                f"{record['sha256'][:16]}... recorded in {INDEX_NAME}; run the build again to recompute it"
            )
        self._verified.add(name)

    def verify(self) -> None:
        """Check every shard (reads each once, streamed)."""
        for name in self.shards:
            self.verify_shard(name)

    def _handle(self, name: str):
        handle = self._handles.get(name)
        if handle is not None:
            self._handles.move_to_end(name)
            return handle
        if self.verify_checksums and name not in self._verified:
            self.verify_shard(name)
        try:
            handle = safe_open(str(self.path / name), framework="pt")
        except (SafetensorError, OSError) as error:
            raise CorruptShardError(f"shard {name} of cache {self.path} cannot be opened ({error})") from error
        self._handles[name] = handle
        if len(self._handles) > self.max_open_shards:
            self._handles.popitem(last=False)
        return handle

    def __getitem__(self, key: str) -> list[torch.Tensor]:
        """Per backbone the states of segment `key`: `(units, d_i)` (`(units, layers, d_i)` for a `"mix"` layer)."""
        location = self._locations.get(key)
        if location is None:
            raise MissingSegmentError(f"segment {key} is not in the cache at {self.path}; build it over this data")
        name = location[0]
        handle = self._handle(name)
        try:
            return [handle.get_tensor(f"{key}/{index}") for index in range(self.num_backbones)]
        except (SafetensorError, OSError) as error:
            raise CorruptShardError(f"shard {name} of cache {self.path} cannot be read ({error})") from error

    def check(self, model, processor: MetaEmbedProcessor) -> None:
        """Raise `CacheFingerprintError` listing every difference between this cache's fingerprint and the one of
        `model` with `processor` (and `UncacheableModelError` if `model` cannot train from a cache at all)."""
        differences = fingerprint_differences(self.fingerprint, model_fingerprint(model, processor))
        if differences:
            raise CacheFingerprintError(
                f"the feature cache at {self.path} was built for a different model or processor:\n  "
                + "\n  ".join(differences)
                + "\nuse the model it was built for, or rebuild it for this one with "
                "build_feature_cache(model, processor, path, ..., overwrite=True)"
            )

    def __getstate__(self) -> dict:
        # DataLoader workers each reopen the shards they read
        state = dict(self.__dict__)
        state["_handles"] = OrderedDict()
        return state

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.path)!r}, segments={len(self)}, shards={len(self.shards)})"


def load_feature_cache(path: str | os.PathLike, model, processor: MetaEmbedProcessor, **kwargs) -> FeatureCache:
    """Open a cache and check it was built for `model` and `processor` (raises `CacheFingerprintError` if not).
    `kwargs` go to `FeatureCache`."""
    cache = FeatureCache(path, **kwargs)
    cache.check(model, processor)
    return cache


# --------------------------------------------------------------------------------------------- building


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


def _segment_length(chains: Sequence[str], unit_types: Sequence[str]) -> int:
    """Units of a segment as given (residues, or words for text backbones), before any truncation."""
    if "word" in unit_types:
        return sum(len(chain.split()) for chain in chains)
    return sum(len("".join(chain.split())) for chain in chains)


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
    fresh = {"format": CACHE_FORMAT, "format_version": CACHE_FORMAT_VERSION, "fingerprint": fingerprint, "shards": {}}
    for leftover in directory.glob(".*.tmp"):
        leftover.unlink()
    if not (directory / INDEX_NAME).exists():
        return fresh
    if overwrite:
        for shard in directory.glob("shard-*.safetensors"):
            shard.unlink()
        return fresh
    index = _read_index(directory)
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
        elif verify_existing and _file_sha256(path) != record["sha256"]:
            problem = "corrupted (checksum mismatch)"
        if problem:
            warnings.warn(f"shard {name} of cache {directory} is {problem}; recomputing its segments", stacklevel=3)
            del index["shards"][name]
            path.unlink(missing_ok=True)
    return index


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
                    lengths[key] = _segment_length(chains, unit_types)
    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    index = _open_for_build(directory, model_fingerprint(base, processor), overwrite, verify_existing)
    atomic_write_json(directory / INDEX_NAME, index)
    done = set()
    for name in index["shards"]:
        done.update(_shard_segments(directory / name))
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
        index["shards"][name] = _write_shard(directory, name, tensors, {key: stored_units[key] for key in shard_keys})
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


# ---------------------------------------------------------------------------------------- training data


class CachedFeatureDataset(Dataset):
    """A dataset of cached backbone states, one item per sample, for `Trainer` or a `DataLoader`.

    Each item is `{"backbone_states": [[(units, d_i) per backbone] per segment], "segment_side_index": [side per
    segment], "labels": label}`; batch items with `CachedFeatureCollator`. Every needed segment is looked up at
    construction, so a sample the cache lacks is reported before training starts.
    """

    def __init__(
        self,
        cache: FeatureCache,
        *,
        sequences: Sequence[str] | None = None,
        ligand: Sequence[Sequence[str]] | None = None,
        receptor: Sequence[Sequence[str]] | None = None,
        labels: Sequence | torch.Tensor | None = None,
        architecture: str = "single",
    ) -> None:
        self.cache = cache
        self.architecture = architecture
        unit_types = cache.unit_types
        self.samples = [
            [(side, segment_key(chains, unit_types)) for side, chains in segments]
            for segments in sample_segments(architecture, sequences, ligand, receptor)
        ]
        if labels is not None and len(labels) != len(self.samples):
            raise ValueError(f"{len(labels)} labels for {len(self.samples)} samples; give one label per sample")
        self.labels = labels
        absent = [i for i, segments in enumerate(self.samples) if any(key not in cache for _, key in segments)]
        if absent:
            raise MissingSegmentError(
                f"{len(absent)} samples (first: {absent[:5]}) need segments the cache at {cache.path} does not hold; "
                f"build it over these samples with build_feature_cache(..., architecture={architecture!r})"
            )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        item = {
            "backbone_states": [self.cache[key] for _, key in self.samples[index]],
            "segment_side_index": [side for side, _ in self.samples[index]],
        }
        if self.labels is not None:
            item["labels"] = self.labels[index]
        return item


class CachedFeatureCollator:
    """Pad `CachedFeatureDataset` items into model inputs.

    Returns `backbone_states` (per backbone `(segments, units, d_i)`, zero-padded), `unit_mask (segments, units)`,
    `segment_sample_index` and `segment_side_index (segments,)` and, when items carry them, `labels` (`(samples,)`
    or `(samples, num_labels)`; with `per_unit_labels=True`, `(samples, units)` padded with -100).
    """

    def __init__(self, per_unit_labels: bool = False) -> None:
        self.per_unit_labels = per_unit_labels

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        segments = [segment for feature in features for segment in feature["backbone_states"]]
        lengths = torch.tensor([segment[0].shape[0] for segment in segments])
        states = [pad_sequence(list(per_backbone), batch_first=True) for per_backbone in zip(*segments)]
        units = states[0].shape[1]
        batch = {
            "backbone_states": states,
            "unit_mask": (torch.arange(units).unsqueeze(0) < lengths.unsqueeze(1)).long(),
            "segment_sample_index": torch.tensor(
                [i for i, feature in enumerate(features) for _ in feature["backbone_states"]], dtype=torch.long
            ),
            "segment_side_index": torch.tensor(
                [side for feature in features for side in feature["segment_side_index"]], dtype=torch.long
            ),
        }
        if "labels" in features[0]:
            labels = [feature["labels"] for feature in features]
            if self.per_unit_labels:
                padded = torch.full((len(labels), units), -100, dtype=torch.long)
                for row, values in enumerate(labels):
                    padded[row, : len(values)] = torch.as_tensor(values, dtype=torch.long)
                batch["labels"] = padded
            else:
                batch["labels"] = torch.stack([torch.as_tensor(label) for label in labels])
        return batch


# ----------------------------------------------------------------------------------- files and command line


def read_records(path: str | os.PathLike) -> list[dict]:
    """Rows of a `.csv`/`.tsv` file (header line first) or a `.jsonl` file (one JSON object per line)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ","))
    if suffix in (".jsonl", ".ndjson"):
        records = []
        with open(path, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path} line {line_number} is not valid JSON ({error})") from error
                if not isinstance(record, dict):
                    raise ValueError(f"{path} line {line_number}: expected a JSON object, got {type(record).__name__}")
                records.append(record)
        return records
    raise ValueError(f"cannot read {path}: expected a .csv, .tsv or .jsonl file, got {suffix or 'no suffix'!r}")


def _side_chains(record: dict, columns: Sequence[str], separator: str, row: int, side: str) -> list[str]:
    chains = []
    for column in columns:
        if column not in record:
            raise ValueError(f"row {row}: no column {column!r} for the {side}; columns are: {', '.join(record)}")
        value = record[column]
        if isinstance(value, list):
            chains += [str(chain).strip() for chain in value if str(chain).strip()]
        elif value not in (None, ""):
            chains += [chain.strip() for chain in str(value).split(separator) if chain.strip()]
    if not chains:
        raise ValueError(f"row {row}: the {side} has no chain (columns {', '.join(columns)} are empty); drop the row")
    return chains


def records_to_inputs(
    records: list[dict],
    *,
    sequence_column: str | None = None,
    ligand_columns: Sequence[str] | None = None,
    receptor_columns: Sequence[str] | None = None,
    chain_separator: str = ",",
) -> dict:
    """`{"sequences": [...]}` or `{"ligand": [[...]], "receptor": [[...]]}` from table rows.

    Complexes: each side's chains come from one or more columns; a cell holds one chain, several joined by
    `chain_separator`, or (JSONL) a list of chains; empty cells are skipped. Without column arguments, a `sequence`
    column, else `ligand` and `receptor` columns, are used.
    """
    if not records:
        raise ValueError("the input file has no rows")
    columns = list(records[0])
    if sequence_column is None and ligand_columns is None and receptor_columns is None:
        if "sequence" in columns:
            sequence_column = "sequence"
        elif "ligand" in columns and "receptor" in columns:
            ligand_columns, receptor_columns = ["ligand"], ["receptor"]
        else:
            raise ValueError(
                f"name the input columns: a sequence column, or ligand and receptor chain columns (found: "
                f"{', '.join(columns)})"
            )
    if sequence_column is not None:
        if ligand_columns or receptor_columns:
            raise ValueError("give either a sequence column or ligand/receptor columns, not both")
        sequences = []
        for row, record in enumerate(records):
            if sequence_column not in record:
                raise ValueError(f"row {row}: no column {sequence_column!r}; columns are: {', '.join(record)}")
            sequences.append(str(record[sequence_column]))
        return {"sequences": sequences}
    if not ligand_columns or not receptor_columns:
        raise ValueError("complexes need both ligand and receptor columns")
    return {
        "ligand": [_side_chains(r, ligand_columns, chain_separator, i, "ligand") for i, r in enumerate(records)],
        "receptor": [_side_chains(r, receptor_columns, chain_separator, i, "receptor") for i, r in enumerate(records)],
    }


def _load_model_and_processor(model_or_folder, processor, config_kwargs: dict, backbone_kwargs: dict):
    """A MetaEmbed model and its processor from a model object, a saved model folder, or backbone names."""
    if isinstance(model_or_folder, torch.nn.Module):
        base = _base_model(model_or_folder)
        if processor is None:
            processor = MetaEmbedProcessor.from_backbones(
                base.config.backbone_names, revisions=base.config.backbone_revisions
            )
        return model_or_folder, processor
    names = [model_or_folder] if isinstance(model_or_folder, str | os.PathLike) else list(model_or_folder)
    folder = Path(names[0])
    config_path = folder / "config.json"
    if len(names) == 1 and config_path.is_file():
        with open(config_path, encoding="utf-8") as handle:
            model_type = json.load(handle).get("model_type")
        if model_type == "metaembed":
            model = MetaEmbedModel.from_pretrained(folder)
            if processor is None:
                if (folder / "processor_config.json").is_file():
                    processor = MetaEmbedProcessor.from_pretrained(folder)
                else:
                    processor = MetaEmbedProcessor.from_backbones(
                        model.config.backbone_names, revisions=model.config.backbone_revisions
                    )
            return model, processor
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
    """Build a feature cache for the sequences or complexes of a CSV/TSV/JSONL file.

    Args:
        path: the input table (see `records_to_inputs` for how columns become sequences or chains).
        model_or_folder: a MetaEmbed model, a folder saved with `save_pretrained` (its processor is loaded from the
            same folder when saved there), or a list of backbone names/folders (then `layers`, `level`,
            `subword_pooling`, `pooling` and `dtype` describe the model the cache is for).
        output_dir: the cache folder (resumed if it holds a cache with the same fingerprint).
        architecture: architecture(s) whose segments to cache; plain sequences default to `single`, complexes to
            the model's architecture.
        device: where to run the backbones (e.g. `"cuda"`).
        Other arguments as `build_feature_cache` and `records_to_inputs`.
    """
    inputs = records_to_inputs(
        read_records(path),
        sequence_column=sequence_column,
        ligand_columns=ligand_columns,
        receptor_columns=receptor_columns,
        chain_separator=chain_separator,
    )
    config_kwargs = {"level": level, "subword_pooling": subword_pooling, "pooling": pooling}
    if layers is not None:
        config_kwargs["layers"] = [int(layer) if str(layer).lstrip("-").isdigit() else layer for layer in layers]
    backbone_kwargs = {"dtype": getattr(torch, dtype)} if dtype else {}
    model, processor = _load_model_and_processor(model_or_folder, processor, config_kwargs, backbone_kwargs)
    if device is not None:
        model.to(device)
    if architecture is None:
        architecture = "single" if "sequences" in inputs else _base_model(model).config.architecture
        if architecture == "single" and "sequences" not in inputs:
            raise ValueError(
                f"the file holds complexes: name the architecture whose segments to cache (one or more of "
                f"{', '.join(PAIR_LAYOUTS)})"
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
    """Add the arguments of `hf-metaembed cache` to `parser` (a subcommand parser); run with `run_cache_command`."""
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
    """Run `hf-metaembed cache` with parsed `args`; print a summary (or the error) and return the exit code.

    Exit codes follow `hf-metaembed`: 2 for input and usage errors the user must fix (missing or unreadable file,
    unknown column, invalid sequence, a cache folder built for another model), 1 for failures while running (a
    failed write, a model error). With `args.debug` the error propagates with its traceback.
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
    except (ValueError, TypeError, OSError) as error:
        if getattr(args, "debug", False):
            raise
        usage = (ValueError, TypeError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
        print(f"hf-metaembed cache: error: {one_line(error)}", file=sys.stderr)
        return 2 if isinstance(error, usage) else 1
    summary = cache.build_summary
    print(
        f"cached {summary['computed']} new segments ({summary['reused']} reused; {summary['unique_segments']} "
        f"unique of {summary['segments_read']} read) in {summary['shards_written']} new shards; {cache.path} now "
        f"holds {len(cache)} segments in {len(cache.shards)} shards"
    )
    return 0


__all__ = [
    "ALIGNMENT_VERSION",
    "CacheFingerprintError",
    "CachedFeatureCollator",
    "CachedFeatureDataset",
    "CorruptShardError",
    "FeatureCache",
    "FeatureCacheError",
    "MissingSegmentError",
    "UncacheableModelError",
    "add_cache_arguments",
    "build_cache_from_file",
    "build_feature_cache",
    "cacheable_base_model",
    "fingerprint_differences",
    "load_feature_cache",
    "model_fingerprint",
    "read_records",
    "records_to_inputs",
    "run_cache_command",
    "sample_segments",
    "segment_key",
]
