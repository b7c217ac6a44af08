"""Cache builds at scale: token-budget batches give the states of one segment at a time; `hf-metaembed cache build`
under `torchrun` equals a single-process build; a rank killed with SIGKILL is resumed with every segment exactly once;
shards another process finished before a crash are adopted, not recomputed."""

import csv
import json
import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from launching import LAUNCH_TIMEOUT, LINUX_PROC, TORCHRUN, finish, launch, rank_processes

import hf_metaembed.cache.build as cache_build
from hf_metaembed import MetaEmbedModel, MetaEmbedProcessor
from hf_metaembed.cache import FeatureCache, build_feature_cache, segment_key
from hf_metaembed.cache.store import INDEX_NAME, write_shard

RESIDUES = list("ACDEFGHIKLMNPQRSTVWY")


def _proteins(count: int, seed: int, low: int = 3, high: int = 60) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(RESIDUES, int(rng.integers(low, high)))) for _ in range(count)]


@pytest.fixture(scope="module")
def saved_model(tiny_esm, tiny_prott5, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("cache_model")
    torch.manual_seed(0)
    MetaEmbedModel.from_backbones([tiny_esm, tiny_prott5], fusion="dme").save_pretrained(folder)
    MetaEmbedProcessor.from_backbones([tiny_esm, tiny_prott5]).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def model_and_processor(saved_model):
    return MetaEmbedModel.from_pretrained(saved_model).eval(), MetaEmbedProcessor.from_pretrained(saved_model)


def _states(cache: FeatureCache) -> dict[str, list[torch.Tensor]]:
    return {key: cache[key] for key in cache.keys()}


def _assert_same_states(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for key, tensors in expected.items():
        for a, b in zip(got[key], tensors):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_token_budget_batches_store_each_segments_own_states(model_and_processor, tmp_path):
    model, processor = model_and_processor
    sequences = _proteins(40, seed=0)
    options = {"sequences": sequences, "progress": False}
    budgeted = build_feature_cache(model, processor, tmp_path / "b", max_tokens=120, **options)
    alone = build_feature_cache(model, processor, tmp_path / "a", batch_size=1, **options)
    _assert_same_states(_states(budgeted), _states(alone))
    with pytest.raises(ValueError, match="3 budgets for 2 backbones"):
        build_feature_cache(model, processor, tmp_path / "c", sequences=sequences, max_tokens=[1, 2, 3])


def test_shards_other_processes_finished_are_adopted_after_a_crash(model_and_processor, tmp_path, monkeypatch):
    """A process of a multi-process build writes its shards and lists them in `index-rank-N.json`; when the build
    dies before the main process lists them in the index, the next build adopts them instead of recomputing."""
    model, processor = model_and_processor
    sequences = _proteins(12, seed=1)
    folder = tmp_path / "cache"
    build_feature_cache(model, processor, folder, sequences=sequences[:4], progress=False)
    reference = build_feature_cache(model, processor, tmp_path / "whole", sequences=sequences, progress=False)
    # what rank 1 of a killed build left: a whole shard and its list, the index not yet updated
    keys = [segment_key([s], processor.unit_types) for s in sequences[4:8]]
    tensors = {f"{key}/{b}": reference[key][b] for key in keys for b in range(2)}
    record = write_shard(folder, "shard-00007.safetensors", tensors, {key: reference.num_units(key) for key in keys})
    (folder / "index-rank-1.json").write_text(json.dumps({"shard-00007.safetensors": record}))
    computed = []
    original = cache_build._compute_shard

    def counting(base, processor, wanted, shard_keys, *args):
        computed.extend(shard_keys)
        return original(base, processor, wanted, shard_keys, *args)

    monkeypatch.setattr(cache_build, "_compute_shard", counting)
    resumed = build_feature_cache(model, processor, folder, sequences=sequences, progress=False)
    assert resumed.build_summary["reused"] == 8 and resumed.build_summary["computed"] == 4
    assert sorted(computed) == sorted(segment_key([s], processor.unit_types) for s in sequences[8:])
    assert "shard-00007.safetensors" in json.loads((folder / INDEX_NAME).read_text())["shards"]
    assert not list(folder.glob("index-rank-*.json"))
    _assert_same_states(_states(resumed), _states(reference))


def _table(path: Path, sequences: list[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sequence"])
        writer.writerows([s] for s in sequences)
    return path


def test_two_processes_build_the_single_process_cache(saved_model, model_and_processor, tmp_path):
    model, processor = model_and_processor
    sequences = _proteins(60, seed=2)
    table = _table(tmp_path / "in.csv", sequences)
    argv = ["cache", "build", table, tmp_path / "two", "--model", saved_model, "--max-tokens", 200, "--no-progress"]
    code, out, err = finish(launch(TORCHRUN, argv))
    assert code == 0, err[-3000:]
    assert out.count("cached 60 new segments") == 1  # the main process reports for both
    two = FeatureCache(tmp_path / "two")
    assert len(two.shards) >= 4  # enough shards for both processes to take turns
    assert not list((tmp_path / "two").glob("index-rank-*.json"))
    one = build_feature_cache(model, processor, tmp_path / "one", sequences=sequences, progress=False)
    _assert_same_states(_states(two), _states(one))
    two.verify()


@pytest.mark.skipif(not LINUX_PROC, reason="finds the ranks through Linux /proc")
def test_a_killed_rank_is_resumed_with_every_segment_once(saved_model, model_and_processor, tmp_path):
    model, processor = model_and_processor
    sequences = _proteins(400, seed=3, low=20, high=60)
    table = _table(tmp_path / "in.csv", sequences)
    folder = tmp_path / "cache"
    argv = ["cache", "build", table, folder, "--model", saved_model, "--batch-size", 2, "--no-progress"]
    process = launch(TORCHRUN, [*argv, "--shard-size-mb", 0.02])
    killed = None
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if list(folder.glob("index-rank-1.json")) and len(list(folder.glob("shard-*.safetensors"))) >= 4:
                killed = rank_processes(process.pid).get(1)
                break
            time.sleep(0.05)
        assert killed is not None, f"the build ended before a rank could be killed: {process.stderr.read()[-2000:]}"
        os.kill(killed, signal.SIGKILL)
    finally:
        code, _, err = finish(process)
    assert code != 0
    finished_by_rank_1 = set(json.loads((folder / "index-rank-1.json").read_text()))
    assert finished_by_rank_1

    code, out, err = finish(launch(TORCHRUN, argv))
    assert code == 0, err[-3000:]
    computed, unique = re.search(r"cached (\d+) new segments .* (\d+) unique", out).groups()
    assert 0 < int(computed) < 400 and unique == "400"  # the rerun computes only what no process finished
    cache = FeatureCache(folder)
    assert finished_by_rank_1 <= set(cache.shards)  # adopted, not recomputed
    keys = [segment_key([s], processor.unit_types) for s in sequences]
    assert sorted(cache.keys()) == sorted(set(keys))  # every segment, each in one shard
    stored = [key for name in cache.shards for key in json.loads(_header(folder / name))]
    assert len(stored) == len(set(stored)) == len(set(keys))
    one = build_feature_cache(model, processor, tmp_path / "one", sequences=sequences, progress=False)
    _assert_same_states(_states(cache), _states(one))


def _header(path: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()["segments"]
