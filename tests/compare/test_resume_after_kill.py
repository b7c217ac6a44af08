"""`hf-metaembed compare` killed mid-grid (SIGKILL, no clean-up) resumes: the finished runs are kept byte for byte,
only the missing ones train (here in two worker processes), the backbones are not read again, and the result equals
an uninterrupted comparison's."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
from conftest import polarity_texts, write_csv

from hf_metaembed.compare import Budget, compare
from hf_metaembed.compare.runner import RUNS_FOLDER

CELLS, SEEDS = 4, 2  # 2 backbones alone + concat and dme
FUSIONS = ["concat", "dme"]


def _command(data: str, backbones: list[str], output, jobs: int) -> list[str]:
    return [
        sys.executable, "-m", "hf_metaembed.cli", "compare", data, "--backbones", ",".join(backbones),
        "--names", "bert,static", "--fusions", ",".join(FUSIONS), "--folds", "3", "--seeds", str(SEEDS),
        "--epochs", "6", "--patience", "6", "--batch-size", "4", "--resamples", "100", "--permutations", "100",
        "--output-dir", str(output), "--jobs", str(jobs), "--no-progress", "--threads", "1",
    ]  # fmt: skip


def _runs(output) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in (output / RUNS_FOLDER).glob("*.json")}


def test_killed_comparison_resumes_where_it_stopped(tiny_bert, tiny_static, tmp_path):
    texts, labels = polarity_texts(30, seed=1)
    data = write_csv(tmp_path / "data.csv", texts, labels)
    output = tmp_path / "out"
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen(
        _command(data, [tiny_bert, tiny_static], output, jobs=1),
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not (output / RUNS_FOLDER).is_dir() or not _runs(output):
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "no run finished within 2 minutes"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    before = _runs(output)
    assert 1 <= len(before) < CELLS * SEEDS, "the kill must land mid-grid"
    mtimes = {name: (output / RUNS_FOLDER / name).stat().st_mtime_ns for name in before}

    resumed = subprocess.run(
        _command(data, [tiny_bert, tiny_static], output, jobs=2), env=environment, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"{CELLS * SEEDS - len(before)} runs trained, {len(before)} resumed" in resumed.stderr
    assert "backbone segments read: bert 0, static 0" in resumed.stderr
    assert resumed.stdout.count("★") == 1
    after = _runs(output)
    assert len(after) == CELLS * SEEDS
    for name, content in before.items():
        assert after[name] == content
        assert (output / RUNS_FOLDER / name).stat().st_mtime_ns == mtimes[name]
    assert not list((output / RUNS_FOLDER).glob(".*.tmp"))

    # the same grid without interruption, in this process, gives the same predictions
    fresh = tmp_path / "fresh"
    compare(
        [tiny_bert, tiny_static], names=["bert", "static"], sequences=texts, labels=labels, output_dir=fresh,
        fusions=FUSIONS, folds=3, seeds=SEEDS, budget=Budget(epochs=6, patience=6, batch_size=4), resamples=100,
        permutations=100, progress=False,
    )  # fmt: skip
    for name, content in _runs(fresh).items():
        expected, got = json.loads(content), json.loads(after[name])
        np.testing.assert_allclose(got["predictions"], expected["predictions"], atol=1e-5)
        assert got["split_digest"] == expected["split_digest"]
