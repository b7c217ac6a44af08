"""The on-disk format of a feature cache, and `FeatureCache`, its memory-mapped reader.

    cache_dir/index.json                 fingerprint of model and processor, shard list with sha256 checksums
    cache_dir/shard-00000.safetensors    tensors "<segment key>/<backbone>": (units, d_i); header lists its keys

A shard is written to a temporary name and renamed, so a shard file is either complete or absent; the index is
rewritten (atomically) after every shard. Shards are read back memory-mapped, one segment at a time. One build writes
to a folder at a time (`lock.CacheWriteLock`); on starting it removes the shards no index lists
(`remove_orphan_shards`).
"""

import json
import os
import re
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..io.files import atomic_save_safetensors, file_sha256
from ..modeling.processing_metaembed import MetaEmbedProcessor
from .errors import CacheFingerprintError, CorruptShardError, FeatureCacheError, MissingSegmentError
from .fingerprint import fingerprint_differences, model_fingerprint

CACHE_FORMAT = "hf_metaembed.feature_cache"
CACHE_FORMAT_VERSION = 1
INDEX_NAME = "index.json"
# the names `build_feature_cache` gives shards
SHARD_NAME = re.compile(r"shard-\d{5}\.safetensors")


def new_index(fingerprint: dict) -> dict:
    """The index of an empty cache for `fingerprint`."""
    return {"format": CACHE_FORMAT, "format_version": CACHE_FORMAT_VERSION, "fingerprint": fingerprint, "shards": {}}


def write_shard(directory: Path, name: str, tensors: dict[str, torch.Tensor], segments: dict[str, int]) -> dict:
    """Write one shard under a temporary name, then rename it: a shard file either is complete or does not exist."""
    path = directory / name
    atomic_save_safetensors(tensors, path, metadata={"segments": json.dumps(segments, sort_keys=True)})
    return {"sha256": file_sha256(path), "bytes": path.stat().st_size, "segments": len(segments)}


def read_index(directory: Path) -> dict:
    """The index of the cache in `directory`; `FeatureCacheError` if there is none or it has another format."""
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


def shard_segments(path: Path) -> dict[str, int]:
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


def remove_orphan_shards(directory: str | os.PathLike) -> list[str]:
    """Delete the cache shards in `directory` that its index does not list; returns their names.

    Such shards are what a build killed between renaming a shard and rewriting the index left behind, or every shard
    once `index.json` was deleted; a build would never read them, only write over some of them. Files that are not
    this cache's shards (another name, or a header without the cache's segment list, such as `hf-metaembed embed`'s
    shards) are never touched, and nothing is when an index exists but cannot be read (the build reports that).
    Call it only while holding the folder's write lock (`lock.CacheWriteLock`): another build's newest shard is not
    listed yet while that build runs.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    listed: set[str] = set()
    if (directory / INDEX_NAME).exists():
        try:
            listed = set(read_index(directory)["shards"])
        except FeatureCacheError:
            return []
    removed = []
    for path in sorted(directory.glob("shard-*.safetensors")):
        if path.name in listed or not SHARD_NAME.fullmatch(path.name):
            continue
        try:
            shard_segments(path)
        except CorruptShardError:  # not a header this cache wrote: leave it alone
            continue
        path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed


class FeatureCache:
    """Read access to a built cache: `cache[key]` gives one segment's per-backbone states, read memory-mapped.

    Shards are opened lazily (at most `max_open_shards` at once) and, with `verify_checksums`, each one's sha256 is
    checked against the index the first time it is read in a process; a mismatch raises `CorruptShardError`.
    Opening reads only `index.json` and the shard headers. Use `load_feature_cache` to also check the fingerprint.
    """

    def __init__(self, path: str | os.PathLike, *, verify_checksums: bool = True, max_open_shards: int = 32) -> None:
        self.path = Path(path)
        index = read_index(self.path)
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
            for key, units in shard_segments(self.path / name).items():
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
        actual = file_sha256(self.path / name)
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


__all__ = [
    "CACHE_FORMAT",
    "CACHE_FORMAT_VERSION",
    "INDEX_NAME",
    "FeatureCache",
    "load_feature_cache",
    "new_index",
    "read_index",
    "remove_orphan_shards",
    "shard_segments",
    "write_shard",
]
