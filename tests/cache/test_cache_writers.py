"""Concurrent cache writers: one build at a time per folder (a second waits, or fails at once with a message naming
the holder), nothing a finished build reported goes missing when two builds with different data share a folder, and
a rebuild removes the shards no index lists (also after index.json was deleted)."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import tiny_backbones as tb
import torch
from safetensors.torch import save_file

from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedProcessor
from hf_metaembed.cache import FeatureCache, build_feature_cache, load_feature_cache, segment_key
from hf_metaembed.cache.lock import LOCK_NAME, CacheLockedError, CacheWriteLock
from hf_metaembed.cache.store import INDEX_NAME, remove_orphan_shards
from hf_metaembed.cli import EXIT_FAILURE, main

TESTS = Path(__file__).resolve().parents[1]
FIRST = ["MKTAYIAKQR", "GSHMLEDPVA", "MVLSPADKTN", "ACDEFGHIKL", "MKKLLPTWYR", "QQQRRSTVWY", "WYWYPRQKLM"]
SECOND = ["PADKTNVKAA", "HMLEDPVAGS", "YIAKQRQISF", "LLPTAAGWMK", "RRSQQQWYVT", "KLMWYWYPRQ", "TNVKAAWGKV"]


@pytest.fixture(scope="module")
def esm_dir(tmp_path_factory) -> str:
    return tb.make_tiny_esm(tmp_path_factory.mktemp("writers") / "esm")


@pytest.fixture(scope="module")
def model_and_processor(esm_dir):
    model = MetaEmbedForSequenceClassification.from_backbones([esm_dir], num_labels=1, unit_types=["residue"])
    return model.eval(), MetaEmbedProcessor.from_backbones([esm_dir])


def _hold_lock(folder: Path, release: threading.Event, holding: threading.Event) -> threading.Thread:
    """A thread that holds the write lock of `folder` until `release` is set."""

    def hold():
        with CacheWriteLock(folder):
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert holding.wait(10)
    return thread


def test_a_second_writer_fails_at_once_or_waits(tmp_path):
    folder = tmp_path / "cache"
    release, holding = threading.Event(), threading.Event()
    holder = _hold_lock(folder, release, holding)
    try:
        started = time.monotonic()
        with pytest.raises(CacheLockedError, match=rf"process {os.getpid()} on host .* within 0 s") as failure:
            with CacheWriteLock(folder, timeout=0):
                pass
        assert time.monotonic() - started < 1.0
        assert failure.value.folder == folder and failure.value.timeout == 0

        started = time.monotonic()
        with pytest.raises(CacheLockedError, match="within 0.3 s"), pytest.warns(UserWarning, match="waiting"):
            with CacheWriteLock(folder, timeout=0.3):
                pass
        assert 0.3 <= time.monotonic() - started < 2.0

        # without a timeout the writer waits (saying so once) until the holder is done
        threading.Timer(0.5, release.set).start()
        started = time.monotonic()
        with pytest.warns(UserWarning, match="being written by another build .*waiting for it to finish"):
            with CacheWriteLock(folder):
                waited = time.monotonic() - started
        assert waited >= 0.4
    finally:
        release.set()
        holder.join(10)
    with CacheWriteLock(folder, timeout=0):  # released by every holder
        pass
    with pytest.raises(ValueError, match="lock_timeout is -1"):
        CacheWriteLock(folder, timeout=-1)


def test_build_refuses_a_busy_folder_at_once_with_lock_timeout_zero(model_and_processor, tmp_path, capsys):
    model, processor = model_and_processor
    folder = tmp_path / "cache"
    release, holding = threading.Event(), threading.Event()
    holder = _hold_lock(folder, release, holding)
    try:
        with pytest.raises(CacheLockedError):
            build_feature_cache(model, processor, folder, sequences=FIRST, progress=False, lock_timeout=0)
        table = tmp_path / "sequences.csv"
        table.write_text("sequence\n" + "\n".join(FIRST) + "\n", encoding="utf-8")
        code = main(["cache", "build", str(table), str(folder), "--backbones", str(processor.backbone_names[0])]
                    + ["--lock-timeout", "0", "--no-progress"])  # fmt: skip
        err = capsys.readouterr().err
        assert code == EXIT_FAILURE
        assert f"cache folder '{folder}' is being written by another build (process {os.getpid()}" in err
        assert "--lock-timeout SECONDS" in err and "lock_timeout" not in err
        assert not (folder / INDEX_NAME).exists()  # nothing was written while the other writer held the folder
    finally:
        release.set()
        holder.join(10)
    cache = build_feature_cache(model, processor, folder, sequences=FIRST, progress=False, lock_timeout=0)
    assert len(cache) == len(FIRST)


_BUILDER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from hf_metaembed import MetaEmbedForSequenceClassification, MetaEmbedProcessor
    from hf_metaembed.cache import build_feature_cache

    backbone, folder, sequences, ready = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), Path(sys.argv[4])
    model = MetaEmbedForSequenceClassification.from_backbones([backbone], num_labels=1, unit_types=["residue"])
    processor = MetaEmbedProcessor.from_backbones([backbone])
    ready.touch()
    cache = build_feature_cache(model.eval(), processor, folder, sequences=sequences, progress=False,
                                shard_size_mb=0.0005)
    print(json.dumps({"keys": [key for key in cache.keys()], "summary": cache.build_summary}))
    """
)


def test_two_concurrent_builds_with_different_data_keep_everything(esm_dir, model_and_processor, tmp_path):
    """Two processes build different sequences into one folder at the same time: both succeed, and every segment
    each one reported is in the folder afterwards (before the lock, one crashed on the other's temporary index or
    reported success with segments missing)."""
    folder = tmp_path / "shared"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(TESTS))
    release, holding = threading.Event(), threading.Event()
    holder = _hold_lock(folder, release, holding)  # both builders reach the lock while it is taken
    processes = []
    try:
        for number, sequences in enumerate((FIRST, SECOND)):
            ready = tmp_path / f"ready-{number}"
            command = [sys.executable, "-c", _BUILDER, esm_dir, str(folder), json.dumps(sequences), str(ready)]
            processes.append(
                (ready, subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            )
        deadline = time.monotonic() + 120
        while not all(ready.exists() for ready, _ in processes) and time.monotonic() < deadline:
            assert all(process.poll() is None for _, process in processes), processes[0][1].stderr.read()
            time.sleep(0.1)
        time.sleep(0.5)  # both are now waiting for the lock
    finally:
        release.set()
        holder.join(10)
    reports = []
    for _, process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        assert "waiting for it to finish" in err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    unit_types = ["residue"]
    expected = {segment_key([s], unit_types) for s in FIRST + SECOND}
    reported = set(reports[0]["keys"]) | set(reports[1]["keys"])
    assert reported == expected
    assert sorted(report["summary"]["computed"] for report in reports) == [len(FIRST), len(SECOND)]
    model, processor = model_and_processor
    cache = load_feature_cache(folder, model, processor)
    cache.verify()
    assert set(cache.keys()) == expected
    for key in expected:
        assert cache[key][0].shape[0] == 10
    listed = set(json.loads((folder / INDEX_NAME).read_text())["shards"])
    assert {path.name for path in folder.glob("shard-*.safetensors")} == listed


def test_rebuild_removes_shards_no_index_lists(model_and_processor, tmp_path):
    model, processor = model_and_processor
    folder = tmp_path / "cache"
    build_feature_cache(model, processor, folder, sequences=FIRST + SECOND, progress=False, shard_size_mb=0.0005)
    shards = sorted(folder.glob("shard-*.safetensors"))
    assert len(shards) > 3
    # a build killed between renaming a shard into place and rewriting the index leaves an orphan behind
    shutil.copy(shards[0], folder / "shard-00099.safetensors")
    foreign = folder / "shard-00098.safetensors"  # not a cache shard (no segment list in its header): kept
    save_file({"x": torch.zeros(1)}, str(foreign), metadata={"ids": "[]"})
    cache = build_feature_cache(model, processor, folder, sequences=FIRST, progress=False)
    assert cache.build_summary["computed"] == 0
    assert not (folder / "shard-00099.safetensors").exists() and foreign.exists()

    # index.json deleted by hand: a full rebuild of less data leaves only the shards of the new index
    (folder / INDEX_NAME).unlink()
    cache = build_feature_cache(model, processor, folder, sequences=FIRST[:2], progress=False)
    assert cache.build_summary["computed"] == 2 and len(cache) == 2
    on_disk = {path.name for path in folder.glob("shard-*.safetensors")} - {foreign.name}
    assert on_disk == set(cache.shards)
    FeatureCache(folder).verify()


def test_orphan_removal_leaves_unreadable_indexes_and_other_folders_alone(tmp_path):
    assert remove_orphan_shards(tmp_path / "absent") == []
    folder = tmp_path / "embeddings"
    folder.mkdir()
    (folder / INDEX_NAME).write_text(json.dumps({"format": "something else"}))
    (folder / "shard-00000.safetensors").write_bytes(b"not ours")
    assert remove_orphan_shards(folder) == []
    assert (folder / "shard-00000.safetensors").exists()
    assert not (folder / LOCK_NAME).exists()
