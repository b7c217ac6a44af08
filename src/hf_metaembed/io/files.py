"""Crash-safe writing of single files, and the checks and digests the tools make of the files they write or read.

A writer never leaves a half-written file under the final name: it writes a temporary file in the same folder, flushes
it to disk, `os.replace`s it into place and flushes the folder entry, so a crash leaves the previous version (or
nothing) behind. Whole model folders are saved the same way by the bundle's `safe_files.staged_save`; both flush
folders with its `_fsync_folder`, so crash-safe writing has one set of primitives. Importing this module loads
neither torch nor transformers (the command line parses its arguments without them).

Not model code: the cache, the CLI and the demo use it; the model files never import it.
"""

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .records import InputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to `path` for writers that want a file name (e.g. `numpy.lib.format.open_memmap`);
    flushed to disk and renamed to `path` when the block succeeds, removed when it raises."""
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
    from ..modeling.safe_files import _fsync_folder  # here, not at the top: `hf-metaembed --help` never loads torch

    _fsync_folder(path.parent)


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


def remove_leftover_temporaries(folder: str | os.PathLike) -> int:
    """Delete the temporary files (`.NAME.*.tmp`) that `atomic_path` writers killed mid-write left in `folder`; returns
    how many. Call it when resuming work in `folder`, where no other writer is at work."""
    leftovers = list(Path(folder).glob(".*.tmp"))
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
    return len(leftovers)


def atomic_write_json(path: str | os.PathLike, value: Any) -> None:
    """Write `value` as indented JSON (keys sorted) to `path` atomically."""
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
    """Raise `InputError` unless `path` can be created or replaced: its folder exists and accepts a new file.

    The folder is tested by creating (and removing) a hidden temporary file in it, which also catches folders that
    refuse files whatever their permission bits say (`/proc`, read-only mounts). Messages name only `path` as given
    and its folder, never a file the caller would derive from it (a `.parts` folder, a temporary name).
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"cannot write {str(path)!r}: folder {str(parent)!r} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {str(path)!r}: folder {str(parent)!r} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"cannot write {str(path)!r}: the file exists and is not writable")
    try:
        descriptor, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise InputError(
            f"cannot write {str(path)!r}: folder {str(parent)!r} does not accept new files ({reason}); "
            "choose another output location"
        ) from None
    os.close(descriptor)
    os.unlink(probe)
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in chunks (the file is never held in memory whole)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


__all__ = [
    "atomic_path",
    "atomic_save_safetensors",
    "atomic_write",
    "atomic_write_json",
    "check_writable_output",
    "file_sha256",
    "remove_leftover_temporaries",
]
