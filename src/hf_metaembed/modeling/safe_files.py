"""Crash-safe saving and safe loading of model and processor folders.

Saving: everything is written to a hidden staging folder beside the destination, flushed to disk, and only then moved
into place (one atomic rename for a new folder, one atomic `os.replace` per file for an existing one, the file that
names the others last), so a writer killed mid-write leaves the previous save loadable.

Loading: weights come from safetensors only unless the caller opts in to pickle files (`allow_pickle=True`), and a
weight file whose header is damaged or whose data is cut short is reported before any model is built.

Backbone fingerprints: a checkpoint saved without its backbones' weights records a sha256 of each backbone's tensors,
so loading can tell when the weights found under the stored name are not the ones the model was trained with.

Model code (copied next to a saved model for `trust_remote_code`): imports torch, transformers and the standard
library only.
"""

import hashlib
import json
import os
import re
import shutil
import socket
import struct
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import torch
from transformers.utils import cached_file

SAFE_WEIGHTS = "model.safetensors"
SAFE_WEIGHTS_INDEX = "model.safetensors.index.json"
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
# weight files a model save owns: a new save removes the ones it did not write (e.g. shards of an older layout)
MODEL_WEIGHT_FILES = re.compile(
    r"(model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)|(model\.safetensors|pytorch_model\.bin)\.index\.json"
)
_STAGING = ".saving-"
# bytes per element of each safetensors dtype; a dtype missing here is not size-checked
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}  # fmt: skip
_MAX_HEADER_BYTES = 100_000_000


# ------------------------------------------------------------------------------------------------- crash-safe saving


def _fsync_tree(folder: str) -> None:
    """Flush every file (and folder entry) under `folder` to disk, so a rename never exposes unwritten data."""
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_folder(root)


def _fsync_folder(folder: str) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms without directory descriptors (Windows)
        return
    try:
        with suppress(OSError):  # file systems that cannot sync a folder: the rename is still atomic
            os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove_abandoned_staging(parent: str, name: str) -> None:
    """Delete staging folders that writers on this machine left behind when they were killed."""
    prefix = f".{name}{_STAGING}{socket.gethostname()}-"
    for entry in os.listdir(parent):
        if not entry.startswith(prefix):
            continue
        pid = entry[len(prefix) :].split("-", 1)[0]
        if not pid.isdigit() or _process_alive(int(pid)):
            continue
        shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _rename_folder(staging: str, save_directory: str) -> bool:
    """Move the whole staging folder to a `save_directory` that does not exist, in one atomic rename; False if the
    folder was created meanwhile by someone else (the caller then moves file by file)."""
    try:
        os.rename(staging, save_directory)
    except OSError:
        return False
    _fsync_folder(os.path.dirname(os.path.abspath(save_directory)))
    return True


def publish(
    staging: str,
    save_directory: str,
    last: tuple[str, ...] = (),
    stale_files: re.Pattern | None = None,
    owned_folders: re.Pattern | None = None,
) -> None:
    """Move a finished staging folder's files into `save_directory`.

    A new destination is one atomic rename. An existing one (which may hold other files, e.g. the processor's beside
    the model's) gets each file by an atomic `os.replace`, the files named in `last` after all others; then the
    top-level files matching `stale_files` and every file inside folders matching `owned_folders` that this save did
    not write are removed.
    """
    _fsync_tree(staging)
    if not os.path.exists(save_directory) and _rename_folder(staging, save_directory):
        return
    written = []
    for root, _, files in os.walk(staging):
        for name in files:
            written.append(os.path.relpath(os.path.join(root, name), staging))
    written.sort(key=lambda path: (path in last, path))
    for relative in written:
        target = os.path.join(save_directory, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(os.path.join(staging, relative), target)
    keep = set(written)
    for entry in os.listdir(save_directory):
        path = os.path.join(save_directory, entry)
        if os.path.isfile(path) and stale_files is not None and stale_files.fullmatch(entry) and entry not in keep:
            os.remove(path)
        elif os.path.isdir(path) and owned_folders is not None and owned_folders.fullmatch(entry):
            for root, _, files in os.walk(path):
                for name in files:
                    if os.path.relpath(os.path.join(root, name), save_directory) not in keep:
                        os.remove(os.path.join(root, name))
            if not any(files for _, _, files in os.walk(path)):
                shutil.rmtree(path, ignore_errors=True)
    _fsync_folder(save_directory)


@contextmanager
def staged_save(
    save_directory: str | os.PathLike,
    last: tuple[str, ...] = (),
    stale_files: re.Pattern | None = None,
    owned_folders: re.Pattern | None = None,
) -> Iterator[str]:
    """Yield an empty staging folder beside `save_directory`; when the block ends normally, `publish` it.

    An exception (or a killed process) leaves `save_directory` exactly as it was.
    """
    save_directory = os.path.abspath(os.fspath(save_directory))
    if os.path.isfile(save_directory):
        raise NotADirectoryError(f"cannot save into {save_directory}: it is a file; pass a folder path")
    parent, name = os.path.split(save_directory)
    os.makedirs(parent, exist_ok=True)
    _remove_abandoned_staging(parent, name)
    staging = os.path.join(parent, f".{name}{_STAGING}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.makedirs(staging)
    try:
        yield staging
        publish(staging, save_directory, last, stale_files, owned_folders)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# -------------------------------------------------------------------------------------------------- safe loading


class CorruptedWeightsError(ValueError):
    """A weight file that is truncated or whose header cannot be read."""


def safetensors_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Read and check a safetensors file's header (not its data): every tensor's name and shape.

    Raises `CorruptedWeightsError` naming the file when the header is damaged or the data is cut short (the file was
    truncated by a crash or an interrupted download).
    """
    size = os.path.getsize(path)

    def broken(reason: str) -> CorruptedWeightsError:
        return CorruptedWeightsError(
            f"{path} is truncated or corrupted: {reason}; save the model again, or delete the file and download it "
            "again"
        )

    with open(path, "rb") as handle:
        start = handle.read(8)
        if len(start) < 8:
            raise broken(f"it holds only {size} bytes, fewer than the 8-byte header length")
        header_bytes = struct.unpack("<Q", start)[0]
        if header_bytes > min(size - 8, _MAX_HEADER_BYTES):
            raise broken(f"its header claims {header_bytes} bytes but the file holds {size}")
        try:
            header = json.loads(handle.read(header_bytes))
        except (UnicodeDecodeError, ValueError):
            raise broken("its header is not valid JSON") from None
    if not isinstance(header, dict):
        raise broken("its header is not a table of tensors")
    header.pop("__metadata__", None)
    shapes, data_end = {}, 0
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], [int(d) for d in entry["shape"]], entry["data_offsets"]
            begin, end = int(begin), int(end)
        except (KeyError, TypeError, ValueError):
            raise broken(f"the header entry of tensor {name!r} is malformed") from None
        elements = 1
        for dimension in shape:
            elements *= dimension
        width = _DTYPE_BYTES.get(dtype)
        if begin < 0 or end < begin or (width is not None and end - begin != elements * width):
            raise broken(f"tensor {name!r} ({dtype} {shape}) has inconsistent offsets {begin}..{end}")
        shapes[name] = tuple(shape)
        data_end = max(data_end, end)
    data = size - 8 - header_bytes
    if data != data_end:
        raise broken(f"its header describes {data_end} bytes of tensor data but the file holds {data}")
    return shapes


def find_file(source: str, filename: str, **hub_kwargs) -> str | None:
    """The path of `filename` in the folder `source`, or in the local cache of the Hub repo `source` (downloading that
    file only); None when it has no such file. `hub_kwargs` go to `cached_file` (`revision`, `token`, ...)."""
    if os.path.isdir(source):
        path = os.path.join(source, filename)
        return path if os.path.isfile(path) else None
    return cached_file(source, filename, _raise_exceptions_for_missing_entries=False, **hub_kwargs)


def checkpoint_shapes(
    pretrained_model_name_or_path: str | os.PathLike, allow_pickle: bool, hub_kwargs: dict
) -> dict[str, tuple[int, ...]] | None:
    """Check the weight files of a saved model before anything is built, and return every tensor's shape.

    Safetensors files are header-checked (a sharded checkpoint's index and every shard). A folder or repo with only
    pickle weights (`pytorch_model.bin`) is refused unless `allow_pickle`; with it, None is returned (nothing to
    check without unpickling). None is also returned when there are no weights at all (transformers then says so).
    """
    source = os.fspath(pretrained_model_name_or_path)
    single = find_file(source, SAFE_WEIGHTS, **hub_kwargs)
    if single is not None:
        return safetensors_shapes(single)
    index = find_file(source, SAFE_WEIGHTS_INDEX, **hub_kwargs)
    if index is not None:
        try:
            with open(index, encoding="utf-8") as handle:
                weight_map = json.load(handle)["weight_map"]
        except (ValueError, KeyError, TypeError):
            raise CorruptedWeightsError(
                f"{index} is corrupted (not JSON with a weight_map); save the model again"
            ) from None
        shapes = {}
        for shard in sorted(set(weight_map.values())):
            path = find_file(source, shard, **hub_kwargs)
            if path is None:
                raise CorruptedWeightsError(f"{index} names the shard {shard}, which is missing; save the model again")
            shapes.update(safetensors_shapes(path))
        return shapes
    if allow_pickle:
        return None
    if os.path.isdir(source) and not any(os.path.isfile(os.path.join(source, name)) for name in PICKLE_WEIGHTS):
        return None
    raise OSError(
        f"{source} has no safetensors weights ({SAFE_WEIGHTS}), only pickle files ({PICKLE_WEIGHTS[0]}) or none: "
        "unpickling can run arbitrary code, so they are refused by default. If you trust this checkpoint, load it "
        "with allow_pickle=True, then save_pretrained it once to get safetensors"
    )


def safetensors_flag(use_safetensors: bool | None, allow_pickle: bool) -> bool | None:
    """The `use_safetensors` to give transformers: True (safetensors only) unless pickle files are allowed."""
    if allow_pickle:
        return use_safetensors
    if use_safetensors is False:
        raise ValueError(
            "use_safetensors=False would load pickle weights, which can run arbitrary code; pass allow_pickle=True "
            "as well if you trust the checkpoint"
        )
    return True


# ---------------------------------------------------------------------------------------------- backbone fingerprints

_FINGERPRINTS: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()


class BackboneMismatchError(ValueError):
    """The backbone found when loading a backbone-free checkpoint is not the one the checkpoint was saved with."""


def weights_sha256(module: torch.nn.Module) -> str:
    """sha256 over every tensor of `module.state_dict()` in name order: name, dtype, shape and bytes (the digest the
    feature cache records as `weights_sha256`). Memoised per module until one of its tensors is replaced or changed
    in place. Raises `ValueError` when a tensor is not in memory (meta device: offloaded or never loaded)."""
    state = module.state_dict()
    signature = tuple((name, t.data_ptr(), t._version, t.dtype, tuple(t.shape)) for name, t in state.items())
    memo = _FINGERPRINTS.get(module)
    if memo is not None and memo[0] == signature:
        return memo[1]
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach()
        if tensor.is_meta:
            raise ValueError(f"weight {name!r} is on the meta device (offloaded or not loaded): it cannot be hashed")
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    _FINGERPRINTS[module] = (signature, digest.hexdigest())
    return digest.hexdigest()


def parameter_dtype(module: torch.nn.Module) -> torch.dtype | None:
    """The floating-point dtype most of a module's parameters are in (None if it has none): the dtype a backbone was
    loaded in (buffers such as rotary frequencies may stay in float32)."""
    counts: dict[torch.dtype, int] = {}
    for parameter in module.parameters():
        if parameter.is_floating_point():
            counts[parameter.dtype] = counts.get(parameter.dtype, 0) + parameter.numel()
    return max(counts, key=counts.get) if counts else None


def weights_fingerprint(module: torch.nn.Module) -> dict:
    """What a backbone-free checkpoint records per backbone: `{"sha256": ..., "dtype": ...}`, the digest of
    `weights_sha256` and the dtype of its parameters (a backbone read in bfloat16 from a float32 folder is read in
    bfloat16 again when the checkpoint is loaded, so the same weights give the same digest)."""
    dtype = parameter_dtype(module)
    return {"sha256": weights_sha256(module), "dtype": str(dtype).removeprefix("torch.") if dtype else None}


__all__ = [
    "BackboneMismatchError",
    "CorruptedWeightsError",
    "MODEL_WEIGHT_FILES",
    "checkpoint_shapes",
    "publish",
    "safetensors_flag",
    "safetensors_shapes",
    "staged_save",
    "weights_fingerprint",
    "weights_sha256",
]
