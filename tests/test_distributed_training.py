"""Training on two CPU processes (gloo): `Trainer` under DDP with frozen backbones, with cached features (the cache
built by both processes) and with LoRA, under DDP's strict `find_unused_parameters=False`; and the model sharded with
FSDP2, equal to unsharded training. Each case runs tests/ddp_training.py under `torchrun` (a few steps, tiny
backbone)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("ddp_training.py")


def _run(mode: str, backbone: str, folder: Path) -> list[dict]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(SCRIPT), mode, backbone]
    completed = subprocess.run([*command, str(folder)], env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return [json.loads((folder / f"rank-{rank}.json").read_text()) for rank in (0, 1)]


@pytest.mark.parametrize("mode", ["frozen", "cached", "lora"])
def test_trainer_under_ddp_trains_one_model_on_both_processes(mode, tiny_esm, tmp_path):
    ranks = _run(mode, tiny_esm, tmp_path)
    for result in ranks:
        assert result["world_size"] == 2 and result["parallel_mode"] == "ParallelMode.DISTRIBUTED"
        assert result["wrapped"] == "DistributedDataParallel"
        assert len(result["losses"]) == 4 and all(loss == loss for loss in result["losses"])  # 4 steps, no NaN
        assert result["after"]["trainable"] != result["before"]["trainable"]  # it trained
        assert result["after"]["frozen"] == result["before"]["frozen"]  # the backbone weights did not move
    assert ranks[0]["after"] == ranks[1]["after"]  # DDP kept the two copies equal
    assert (ranks[0]["after"]["lora_count"] > 0) == (mode == "lora")  # LoRA adapters train, with fusion and head
    if mode == "cached":
        assert (tmp_path / "cache" / "index.json").exists() and not list((tmp_path / "cache").glob("index-rank-*"))


def test_fsdp_sharded_training_equals_unsharded(tiny_esm, tmp_path):
    ranks = _run("fsdp", tiny_esm, tmp_path)
    assert all(result["wrapped"].startswith("FSDP") for result in ranks)
    assert ranks[0]["after"] == ranks[1]["after"]  # the gathered weights agree
    assert ranks[0]["after"]["frozen"] == ranks[0]["before"]["frozen"]
    assert ranks[0]["max_difference_to_unsharded"] < 1e-5
