"""The embedding shard writer of `hf_metaembed.io.embeddings`: resumes after a killed write without losing or
repeating a record, refuses another run's folder, and assembles `.npy`/`.npz` files equal to the shards."""

import numpy as np
import pytest

from hf_metaembed.io.embeddings import EmbeddingShardWriter, load_embeddings, write_npy, write_npz
from hf_metaembed.io.records import InputError


def test_writer_resumes_after_a_killed_write_and_removes_its_temporary(tmp_path):
    folder = tmp_path / "out"
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    writer = EmbeddingShardWriter(folder, {"input": "a.txt"}, shard_size=2)
    writer.add(["a", "b", "c"], vectors)  # one whole shard written, "c" still queued
    (folder / ".shard-00001.safetensors.k1ll3d.tmp").write_bytes(b"half a shard")  # the write a kill cut short

    resumed = EmbeddingShardWriter(folder, {"input": "a.txt"}, shard_size=2)
    assert resumed.records_done == 2 and not resumed.complete
    assert not list(folder.glob(".*.tmp"))
    resumed.add(["c"], vectors[2:])
    resumed.finish()
    stored = load_embeddings(folder)
    assert stored["ids"].tolist() == ["a", "b", "c"]
    np.testing.assert_array_equal(stored["embeddings"], vectors)

    with pytest.raises(InputError, match=r"different settings \(input changed\)"):
        EmbeddingShardWriter(folder, {"input": "b.txt"}, shard_size=2)


def test_npy_and_npz_hold_the_shards(tmp_path):
    folder = tmp_path / "out"
    vectors = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    weights = [np.full((units, 2), 0.5, dtype=np.float32) for units in (1, 2, 3, 1, 2)]
    writer = EmbeddingShardWriter(folder, {}, shard_size=2)
    writer.add([f"r{i}" for i in range(5)], vectors, weights)
    writer.finish()
    write_npy(folder, tmp_path / "e.npy")
    write_npz(folder, tmp_path / "e.npz")
    np.testing.assert_array_equal(load_embeddings(tmp_path / "e.npy")["embeddings"], vectors)
    archive = load_embeddings(tmp_path / "e.npz")
    np.testing.assert_array_equal(archive["embeddings"], vectors)
    assert archive["ids"].tolist() == [f"r{i}" for i in range(5)]
    assert archive["num_units"].tolist() == [1, 2, 3, 1, 2] and archive["fusion_weights"].shape == (9, 2)
