"""Crash-safe writes of `hf_metaembed.io.files`: a failed write keeps the previous version and leaves no temporary
file; outputs are checked before work starts; file digests."""

import hashlib
import json
import os

import pytest

from hf_metaembed.io.files import atomic_write, atomic_write_json, check_writable_output, file_sha256
from hf_metaembed.io.records import InputError


def test_atomic_write_keeps_the_previous_version_on_failure(tmp_path):
    target = tmp_path / "index.json"
    atomic_write_json(target, {"version": 1})
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as handle:
            handle.write('{"version": 2, "trunc')
            raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"version": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json"]


def test_outputs_are_checked_before_any_work(tmp_path):
    assert check_writable_output(tmp_path / "new.npy") == tmp_path / "new.npy"
    with pytest.raises(InputError, match="does not exist; create it first"):
        check_writable_output(tmp_path / "absent" / "new.npy")
    if not (hasattr(os, "geteuid") and os.geteuid() == 0):
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(InputError, match="is not writable"):
            check_writable_output(locked / "new.npy")


def test_file_sha256_streams_the_bytes(tmp_path):
    data = os.urandom(3 * 2**20 + 17)  # more than one read chunk
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
