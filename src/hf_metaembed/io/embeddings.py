"""Embedding outputs of `hf-metaembed embed`: a resumable folder of safetensors shards, assembled into `.npy`/`.npz`.

Each shard and then the index listing it is written atomically (`hf_metaembed.io.files`), so a crash never loses or
duplicates a record and a rerun resumes after the last whole shard. Readers stream a folder shard by shard.

Not model code: the CLI uses it; the model files never import it.
"""

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .files import atomic_path, atomic_save_safetensors, atomic_write_json, remove_leftover_temporaries
from .records import InputError

EMBEDDING_INDEX_NAME = "index.json"
_SHARD_PATTERN = "shard-{:05d}.safetensors"
_INDEX_KIND = "hf_metaembed-embeddings"


class EmbeddingShardWriter:
    """Resumable, crash-safe writer of embeddings into a folder of safetensors shards plus `index.json`.

    Each shard holds consecutive records: `embeddings (records, dim)` float32, and when fusion weights are kept
    `fusion_weights (units, backbones)` (every record's units, one after another) with `num_units (records,)`; the
    record ids are in the shard's metadata (`"ids"`, a JSON list). A shard is written atomically, then the index that
    lists it, so after a crash the index names only whole shards and a restart continues after the last one: no
    record is lost or written twice. The `fingerprint` (input, model and settings) must match to resume.

    Args:
        folder: the output folder (created if missing).
        fingerprint: JSON-able description of the run; a stored run with a different one is refused.
        shard_size: records per shard; memory holds at most one shard of results.
        overwrite: discard a previous (complete or not) run in `folder` instead of resuming it.
    """

    def __init__(self, folder: str | os.PathLike, fingerprint: dict, shard_size: int, overwrite: bool = False):
        if shard_size < 1:
            raise InputError(f"shard size must be a positive number of records, got {shard_size}")
        self.folder = Path(folder)
        self.fingerprint = json.loads(json.dumps(fingerprint))
        self.shard_size = shard_size
        self.index_path = self.folder / EMBEDDING_INDEX_NAME
        self._buffer: list[tuple[str, Any, Any]] = []
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(f"output {str(self.folder)!r} exists and is not a folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_leftover_temporaries(self.folder)  # a shard or index a killed run was writing
        index = self._read_index()
        if index is not None and overwrite:
            self._remove_run()
            index = None
        if index is None:
            if any(self.folder.iterdir()) and not overwrite:
                raise InputError(
                    f"output folder {str(self.folder)!r} is not empty and holds no embedding run; "
                    "choose an empty or new folder"
                )
            index = {"kind": _INDEX_KIND, "version": 1, "fingerprint": self.fingerprint, "shards": []}
            index.update(records=0, complete=False, dim=None, max_id_length=1)
        elif index["fingerprint"] != self.fingerprint:
            changed = sorted(
                key
                for key in set(index["fingerprint"]) | set(self.fingerprint)
                if index["fingerprint"].get(key) != self.fingerprint.get(key)
            )
            raise InputError(
                f"output {str(self.folder)!r} holds a run with different settings ({', '.join(changed)} changed); "
                "rerun with the original settings to resume, or pass --overwrite to start over"
            )
        self.index = index

    def _read_index(self) -> dict | None:
        if not self.index_path.exists():
            return None
        try:
            index = json.loads(self.index_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise InputError(
                f"cannot read {str(self.index_path)!r} ({error}); pass --overwrite to start over"
            ) from None
        if not isinstance(index, dict) or index.get("kind") != _INDEX_KIND:
            raise InputError(f"{str(self.index_path)!r} is not an hf_metaembed embedding index; choose another output")
        return index

    def _remove_run(self) -> None:
        for stale in self.folder.glob("shard-*.safetensors"):
            stale.unlink()
        self.index_path.unlink()

    @property
    def records_done(self) -> int:
        """Records already stored in whole shards: a restart skips this many input records."""
        return self.index["records"]

    @property
    def records_queued(self) -> int:
        """Records added but not yet written (at most one shard)."""
        return len(self._buffer)

    @property
    def complete(self) -> bool:
        return bool(self.index["complete"])

    def add(self, ids: list[str], embeddings, fusion_weights: list | None = None) -> None:
        """Queue the results of consecutive records; a shard is written whenever `shard_size` are queued.

        Args:
            ids: one id per record.
            embeddings: `(records, dim)` array-like of pooled embeddings.
            fusion_weights: per record a `(units, backbones)` array-like, or None when not kept.
        """
        import numpy as np

        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(ids):
            raise ValueError(f"expected embeddings of shape ({len(ids)}, dim), got {embeddings.shape}")
        for row, record_id in enumerate(ids):
            weights = None if fusion_weights is None else np.asarray(fusion_weights[row], dtype=np.float32)
            self._buffer.append((record_id, embeddings[row], weights))
            if len(self._buffer) >= self.shard_size:
                self.flush()

    def flush(self) -> None:
        """Write the queued records as one shard, then the index that lists it."""
        if not self._buffer:
            return
        import numpy as np
        import torch

        ids = [record_id for record_id, _, _ in self._buffer]
        tensors = {"embeddings": torch.from_numpy(np.stack([emb for _, emb, _ in self._buffer]))}
        if self._buffer[0][2] is not None:
            weights = [w for _, _, w in self._buffer]
            tensors["fusion_weights"] = torch.from_numpy(np.concatenate(weights, axis=0))
            tensors["num_units"] = torch.tensor([w.shape[0] for w in weights], dtype=torch.long)
        position = len(self.index["shards"])
        name = _SHARD_PATTERN.format(position)
        first = self.index["records"]
        metadata = {"ids": json.dumps(ids), "first_record": str(first)}
        atomic_save_safetensors(tensors, self.folder / name, metadata=metadata)
        self.index["shards"].append({"file": name, "first_record": first, "records": len(ids)})
        self.index["records"] = first + len(ids)
        self.index["dim"] = int(tensors["embeddings"].shape[1])
        self.index["max_id_length"] = max(self.index["max_id_length"], *(len(i) for i in ids))
        atomic_write_json(self.index_path, self.index)
        self._buffer = []

    def finish(self) -> None:
        """Write the last records and mark the run complete."""
        self.flush()
        self.index["complete"] = True
        atomic_write_json(self.index_path, self.index)


def iter_embedding_shards(folder: str | os.PathLike) -> Iterator[dict]:
    """Stream the shards of an embedding folder in record order.

    Yields per shard a dict of NumPy arrays: `embeddings (records, dim)`, `ids (records,)` and, when kept,
    `fusion_weights (units, backbones)` and `num_units (records,)`.
    """
    import numpy as np
    from safetensors import safe_open

    folder = Path(folder)
    index_path = folder / EMBEDDING_INDEX_NAME
    if not index_path.exists():
        raise InputError(f"{str(folder)!r} holds no {EMBEDDING_INDEX_NAME}; is it an `hf-metaembed embed` output?")
    index = json.loads(index_path.read_text(encoding="utf-8"))
    for shard in index["shards"]:
        with safe_open(folder / shard["file"], framework="numpy") as handle:
            arrays = {key: handle.get_tensor(key) for key in handle.keys()}
            arrays["ids"] = np.array(json.loads(handle.metadata()["ids"]), dtype=object)
        yield arrays


def _shard_chunks(folder: Path, key: str) -> Iterator:
    for arrays in iter_embedding_shards(folder):
        yield arrays[key]


def write_npy(folder: str | os.PathLike, path: str | os.PathLike) -> None:
    """Assemble the embeddings of a complete shard folder into one `.npy` (records, dim), streamed through
    `numpy.lib.format.open_memmap` and renamed into place atomically."""
    import numpy as np

    folder = Path(folder)
    index = json.loads((folder / EMBEDDING_INDEX_NAME).read_text(encoding="utf-8"))
    with atomic_path(path) as temporary:
        array = np.lib.format.open_memmap(
            temporary, mode="w+", dtype=np.float32, shape=(index["records"], index["dim"])
        )
        row = 0
        for chunk in _shard_chunks(folder, "embeddings"):
            array[row : row + len(chunk)] = chunk
            row += len(chunk)
        array.flush()
        del array


def _stream_npy_entry(archive, name: str, dtype, shape: tuple, chunks: Iterator) -> None:
    import numpy as np

    dtype = np.dtype(dtype)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    with archive.open(f"{name}.npy", "w", force_zip64=True) as entry:
        np.lib.format.write_array_header_2_0(entry, header)
        for chunk in chunks:
            entry.write(np.ascontiguousarray(chunk, dtype=dtype).tobytes())


def write_npz(folder: str | os.PathLike, path: str | os.PathLike) -> None:
    """Assemble a complete shard folder into one `.npz` (`embeddings`, `ids` and, when kept, `fusion_weights`,
    `num_units`), streaming each array into the archive shard by shard; renamed into place atomically."""
    import zipfile

    import numpy as np

    folder = Path(folder)
    index = json.loads((folder / EMBEDDING_INDEX_NAME).read_text(encoding="utf-8"))
    records = index["records"]
    first = next(iter_embedding_shards(folder), {})
    with atomic_path(path) as temporary:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            _stream_npy_entry(
                archive, "embeddings", np.float32, (records, index["dim"]), _shard_chunks(folder, "embeddings")
            )
            id_dtype = f"<U{index['max_id_length']}"
            _stream_npy_entry(archive, "ids", id_dtype, (records,), _shard_chunks(folder, "ids"))
            if "fusion_weights" in first:
                units = sum(int(chunk.sum()) for chunk in _shard_chunks(folder, "num_units"))
                backbones = first["fusion_weights"].shape[1]
                shape = (units, backbones)
                _stream_npy_entry(
                    archive, "fusion_weights", np.float32, shape, _shard_chunks(folder, "fusion_weights")
                )
                _stream_npy_entry(archive, "num_units", np.int64, (records,), _shard_chunks(folder, "num_units"))


def load_embeddings(path: str | os.PathLike) -> dict:
    """Load an `hf-metaembed embed` output (shard folder, `.npz` or `.npy`) whole, as a dict of NumPy arrays:
    `embeddings (records, dim)` and, where stored, `ids (records,)`, `fusion_weights (units, backbones)` and
    `num_units (records,)` (record i owns the `num_units[i]` rows after the first `num_units[:i].sum()`).

    For outputs too large for memory, stream a folder with `iter_embedding_shards` or open a `.npy` with
    `numpy.load(path, mmap_mode="r")`."""
    import numpy as np

    path = Path(path)
    if path.is_dir():
        parts: dict[str, list] = {}
        for arrays in iter_embedding_shards(path):
            for key, value in arrays.items():
                parts.setdefault(key, []).append(value)
        result = {key: np.concatenate(values) for key, values in parts.items()}
        if "ids" in result:
            result["ids"] = result["ids"].astype(str)
        return result
    if path.suffix == ".npy":
        return {"embeddings": np.load(path)}
    with np.load(path) as archive:
        return {key: archive[key] for key in archive.files}


__all__ = [
    "EMBEDDING_INDEX_NAME",
    "EmbeddingShardWriter",
    "iter_embedding_shards",
    "load_embeddings",
    "write_npy",
    "write_npz",
]
