"""One writer at a time per cache folder: an exclusive lock held by every build, across processes and threads.

`build_feature_cache` runs holding the lock of its output folder, from reading the index to writing the last shard.
A second build into the same folder waits until the first has finished and then extends what it wrote (so nothing a
finished build reported goes missing), or, given `lock_timeout`, stops with `CacheLockedError` naming the holder.
On taking the lock a build removes what unfinished writers left behind: shards that no index lists (a build killed
between a shard and the index, or an index deleted by hand).

The lock is the operating system's, taken on the file `.write.lock` in the folder: `fcntl.flock` on POSIX,
`msvcrt.locking` on Windows. The system releases it when its holder ends, however it ends, so it never goes stale.
It is not re-entrant: a thread that holds it must not take it again. Readers (`FeatureCache`) take no lock: the
index and every shard are replaced atomically, so a reader always sees a whole index and whole shards.
"""

import errno
import functools
import inspect
import json
import os
import socket
import time
import warnings
from pathlib import Path
from typing import IO

from .store import remove_orphan_shards

LOCK_NAME = ".write.lock"
# how often a waiting writer retries; builds take seconds to hours, so a tenth of a second costs nothing
_POLL_SECONDS = 0.1
# errors that mean "another holder has it" (POSIX flock: EWOULDBLOCK/EAGAIN; Windows msvcrt: EACCES/EDEADLOCK)
_BUSY = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES, getattr(errno, "EDEADLOCK", errno.EDEADLK)}


class CacheLockedError(TimeoutError):
    """Another writer held the cache folder for longer than the caller agreed to wait.

    Attributes:
        folder: the cache folder.
        holder: who holds it (`"process 123 on host h since 2025-01-01 10:00:00"`), or None when unknown.
        timeout: the seconds waited.
    """

    def __init__(self, folder: Path, holder: str | None, timeout: float):
        self.folder, self.holder, self.timeout = folder, holder, timeout
        who = f" ({holder})" if holder else ""
        super().__init__(
            f"cache folder {str(folder)!r} is being written by another build{who}, which did not finish within "
            f"{timeout:g} s; run again when it has finished, or wait longer: lock_timeout=None waits until it is free"
        )


def _try_lock(handle: IO) -> bool:
    """Take the lock on `handle` without waiting; False when another holder has it."""
    try:
        if os.name == "nt":
            import msvcrt

            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in _BUSY:
            return False
        raise OSError(
            error.errno, f"cannot lock {handle.name} ({error.strerror}); does this file system support file locks?"
        ) from error
    return True


def _unlock(handle: IO) -> None:
    if os.name == "nt":
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _holder(path: Path) -> str | None:
    """Who holds the lock, as its holder wrote it into the lock file (None when unreadable, e.g. on Windows, where
    the locked byte cannot be read, or in the instant between taking the lock and writing it)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return f"process {record['pid']} on host {record['host']} since {record['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return None


class CacheWriteLock:
    """The exclusive write lock of a cache folder (created if missing), as a context manager.

    Args:
        folder: the cache folder.
        timeout: seconds to wait for another writer: None (default) waits until the lock is free, with a warning
            naming the holder once; 0 fails at once. A writer that gives up raises `CacheLockedError`.

    Example:
        >>> with CacheWriteLock("cache/", timeout=0):
        ...     ...  # no other build writes to cache/ meanwhile
    """

    def __init__(self, folder: str | os.PathLike, timeout: float | None = None) -> None:
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"lock_timeout is {timeout!r}; pass seconds to wait (0 fails at once) or None")
        self.folder = Path(folder)
        self.timeout = timeout
        self._handle: IO | None = None

    def __enter__(self) -> "CacheWriteLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_NAME
        handle = open(path, "a+", encoding="utf-8")  # "a+": create it without wiping the holder's record
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        warned = False
        try:
            while not _try_lock(handle):
                if deadline is not None and time.monotonic() >= deadline:
                    raise CacheLockedError(self.folder, _holder(path), self.timeout)
                if not warned:
                    holder = _holder(path)
                    warnings.warn(
                        f"cache folder {str(self.folder)!r} is being written by another build"
                        f"{f' ({holder})' if holder else ''}; waiting for it to finish",
                        stacklevel=3,
                    )
                    warned = True
                time.sleep(_POLL_SECONDS)
        except BaseException:
            handle.close()
            raise
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}))
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc_info) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            try:
                _unlock(handle)
            finally:
                handle.close()


def holds_write_lock(build):
    """Decorate a cache builder `build(model, processor, output_dir, ...)` so that it runs holding the write lock of
    `output_dir` (`CacheWriteLock`), after removing the shards no index lists (`store.remove_orphan_shards`).

    The decorated builder takes one more keyword argument, `lock_timeout` (seconds to wait while another build
    writes to the same folder; None, the default, waits until it is free; 0 fails at once with `CacheLockedError`).
    """
    signature = inspect.signature(build)

    @functools.wraps(build)
    def locked_build(*args, lock_timeout: float | None = None, **kwargs):
        output_dir = Path(signature.bind(*args, **kwargs).arguments["output_dir"])
        with CacheWriteLock(output_dir, timeout=lock_timeout):
            remove_orphan_shards(output_dir)
            return build(*args, **kwargs)

    return locked_build


__all__ = ["LOCK_NAME", "CacheLockedError", "CacheWriteLock", "holds_write_lock"]
