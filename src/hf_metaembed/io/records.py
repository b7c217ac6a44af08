"""Crash-safe writes and streaming readers of sequence files (FASTA, CSV/TSV, JSONL, plain text).

Writers never leave a half-written file under the final name: they write to a temporary name in the same folder and
`os.replace` it into place, so a crash mid-write leaves the previous version (or nothing) behind. Readers yield one
record at a time, so memory does not grow with the size of the file.

Not model code: the CLI and the other tools use it; the model files never import it.
"""

import contextlib
import csv
import gzip
import io
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

INPUT_FORMATS = {
    "fasta": (".fasta", ".fa", ".faa", ".fas", ".fna", ".fsa"),
    "csv": (".csv",),
    "tsv": (".tsv", ".tab"),
    "jsonl": (".jsonl", ".ndjson"),
    "text": (".txt", ".text"),
}


class InputError(ValueError):
    """Input the user must fix: a missing file, an unknown format or column, a malformed line."""


# ---------------------------------------------------------------------------------------------- atomic writes


def one_line(error: BaseException) -> str:
    """An exception's message on one line (the form of every `hf-metaembed` error), or its type if it has none."""
    text = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
    return text or type(error).__name__


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file next to `path`; on success flush it to disk and rename it to `path`.

    If the block raises, the temporary file is removed and `path` is untouched.

    Example:
        >>> with atomic_write("index.json", "w", encoding="utf-8") as handle:
        ...     handle.write("{}")
    """
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as temporary, open(temporary, mode, encoding=encoding) as handle:
        yield handle


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to `path` for writers that want a file name (e.g. `numpy.lib.format.open_memmap`);
    renamed to `path` when the block succeeds, removed when it raises."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(descriptor)
    try:
        yield Path(temporary)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    # make the rename itself durable (POSIX); some platforms cannot open a folder, which is harmless there
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def atomic_write_json(path: str | os.PathLike, value: Any) -> None:
    """Write `value` as indented JSON to `path` atomically."""
    with atomic_write(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, sort_keys=True)
        handle.write("\n")


def atomic_save_safetensors(tensors: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """`safetensors.torch.save_file`, atomically (streamed to a temporary file, no copy of the bytes in memory).
    `tensors` maps names to torch tensors."""
    from safetensors.torch import save_file

    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)


def check_writable_output(path: str | os.PathLike) -> Path:
    """Raise `InputError` unless `path` can be created or replaced (its folder exists and is writable)."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"cannot write {str(path)!r}: folder {str(parent)!r} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {str(path)!r}: folder {str(parent)!r} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"cannot write {str(path)!r}: the file exists and is not writable")
    return path


# ---------------------------------------------------------------------------------------------- readers


@dataclass
class Record:
    """One input record: its position in the file (0-based), an id, the sequence or text, and optional fields."""

    index: int
    id: str
    text: str
    fields: dict[str, Any] | None = None


def detect_input_format(path: str | os.PathLike, declared: str | None = None) -> str:
    """The reader for `path`: `declared` if given, else from the suffix (a trailing `.gz` is ignored)."""
    if declared is not None:
        if declared not in INPUT_FORMATS:
            raise InputError(f"unknown input format {declared!r}; choose one of: {', '.join(INPUT_FORMATS)}")
        return declared
    name = Path(path).name.lower()
    name = name.removesuffix(".gz")
    for input_format, suffixes in INPUT_FORMATS.items():
        if name.endswith(suffixes):
            return input_format
    known = ", ".join(f"{fmt} ({' '.join(suffixes)})" for fmt, suffixes in INPUT_FORMATS.items())
    raise InputError(
        f"unsupported input format for {str(path)!r}: supported are {known}, optionally gzipped; "
        "rename the file or pass --input-format"
    )


def _open_text(path: Path) -> IO[str]:
    if not path.exists():
        raise InputError(f"input file {str(path)!r} does not exist")
    if path.is_dir():
        raise InputError(f"input {str(path)!r} is a folder; pass a file")
    try:
        if path.name.lower().endswith(".gz"):
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
        return open(path, encoding="utf-8", newline="")
    except PermissionError:
        raise InputError(f"input file {str(path)!r} is not readable (permission denied)") from None


def _read_fasta(handle: IO[str], name: str) -> Iterator[Record]:
    header, pieces, index = None, [], 0
    for number, line in enumerate(handle, start=1):
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith(">"):
            if header is not None:
                yield Record(index, header, "".join(pieces))
                index += 1
            header, pieces = (line[1:].split() or [f"record_{index}"])[0], []
        elif header is None:
            raise InputError(f"{name} line {number}: sequence data before the first '>' header; is this FASTA?")
        else:
            pieces.append(line)
    if header is not None:
        yield Record(index, header, "".join(pieces))


def _missing_column(name: str, column: str, available: list[str], where: str = "") -> InputError:
    shown = ", ".join(repr(c) for c in available) if available else "none"
    return InputError(f"{name}{where}: no column {column!r}; available columns: {shown}; pass --column NAME")


def _read_table(
    handle: IO[str], name: str, delimiter: str, column: str, id_column: str | None, extra: list[str]
) -> Iterator[Record]:
    reader = csv.DictReader(handle, delimiter=delimiter)
    available = list(reader.fieldnames or [])
    for wanted in [column, id_column, *extra]:
        if wanted is not None and wanted not in available:
            raise _missing_column(name, wanted, available)
    for index, row in enumerate(reader):
        text = row[column]
        if text is None:
            raise InputError(f"{name} line {reader.line_num}: the row has no value for column {column!r}")
        record_id = row[id_column] if id_column else str(index)
        yield Record(index, record_id, text, {key: row[key] for key in extra})


def _read_jsonl(handle: IO[str], name: str, column: str, id_column: str | None, extra: list[str]) -> Iterator[Record]:
    index = 0
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{name} line {number}: not valid JSON ({error.msg}); fix or remove the line") from None
        if not isinstance(item, dict):
            raise InputError(f"{name} line {number}: expected a JSON object, got {type(item).__name__}")
        for wanted in [column, id_column, *extra]:
            if wanted is not None and wanted not in item:
                raise _missing_column(name, wanted, list(item), f" line {number}")
        text = item[column]
        if not isinstance(text, str):
            raise InputError(f"{name} line {number}: field {column!r} holds {type(text).__name__}, not a string")
        record_id = str(item[id_column]) if id_column else str(index)
        yield Record(index, record_id, text, {key: item[key] for key in extra})
        index += 1


def _read_lines(handle: IO[str]) -> Iterator[Record]:
    index = 0
    for line in handle:
        text = line.rstrip("\r\n")
        if not text.strip():
            continue
        yield Record(index, str(index), text)
        index += 1


def read_records(
    path: str | os.PathLike,
    input_format: str | None = None,
    column: str = "sequence",
    id_column: str | None = None,
    extra_columns: list[str] | None = None,
) -> Iterator[Record]:
    """Stream the records of a sequence file, one at a time.

    Args:
        path: a FASTA, CSV, TSV, JSONL or text file (one sequence per line); `.gz` is read transparently.
        input_format: one of `INPUT_FORMATS`, or None to tell from the suffix.
        column: CSV/TSV column or JSONL field holding the sequence (ignored for FASTA and text).
        id_column: column or field holding the record id; default: the FASTA header's first word, else the record
            number.
        extra_columns: further columns or fields to return in `Record.fields` (e.g. a label).

    Yields:
        `Record`s in file order. Blank lines of text and JSONL files are skipped (they are not records).

    Raises:
        InputError: a missing or unreadable file, an unknown format, a missing column (listing those available), a
            malformed line (naming it).
    """
    path = Path(path)
    input_format = detect_input_format(path, input_format)
    extra = list(extra_columns or [])
    if extra and input_format in ("fasta", "text"):
        raise InputError(f"{input_format} files have no columns; use CSV, TSV or JSONL to give {', '.join(extra)}")
    with _open_text(path) as handle:
        try:
            if input_format == "fasta":
                yield from _read_fasta(handle, path.name)
            elif input_format in ("csv", "tsv"):
                delimiter = "," if input_format == "csv" else "\t"
                yield from _read_table(handle, path.name, delimiter, column, id_column, extra)
            elif input_format == "jsonl":
                yield from _read_jsonl(handle, path.name, column, id_column, extra)
            else:
                yield from _read_lines(handle)
        except UnicodeDecodeError as error:
            raise InputError(f"{path.name}: not UTF-8 text ({error.reason} at byte {error.start})") from None
        except (gzip.BadGzipFile, EOFError) as error:
            raise InputError(f"{path.name}: corrupt gzip data ({error})") from None
        except csv.Error as error:
            raise InputError(f"{path.name}: malformed {input_format.upper()} ({error})") from None


def count_records(path: str | os.PathLike, input_format: str | None = None, column: str = "sequence") -> int:
    """Number of records `read_records` yields (one streaming pass; the file is not held in memory)."""
    return sum(1 for _ in read_records(path, input_format, column))


# ---------------------------------------------------------------------------------------------- embedding outputs

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
    "INPUT_FORMATS",
    "EmbeddingShardWriter",
    "InputError",
    "Record",
    "atomic_path",
    "atomic_save_safetensors",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "check_writable_output",
    "count_records",
    "detect_input_format",
    "iter_embedding_shards",
    "load_embeddings",
    "one_line",
    "read_records",
    "write_npy",
    "write_npz",
]
