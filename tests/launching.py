"""Starting `hf-metaembed` under a launcher (`torchrun`, `accelerate launch`) from tests, and finding its ranks to kill
one: the helpers the multi-process tests share (tests/ is on sys.path, see conftest.py)."""

import os
import subprocess
import sys
from pathlib import Path

LAUNCH_TIMEOUT = 240
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
# accelerate's `--cpu` starts a single process; `--multi_gpu` starts torchrun's processes, on CPUs too (gloo)
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
ACCELERATE += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def launch(launcher: list[str], argv: list) -> subprocess.Popen:
    """`python -m hf_metaembed ARGV` on two processes of one thread each, started by `launcher`."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    command = [*launcher, "-m", "hf_metaembed", *map(str, argv)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    """The exit code, stdout and stderr of a launched job (killed after `LAUNCH_TIMEOUT` seconds)."""
    try:
        out, err = process.communicate(timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return process.returncode, out, err


def rank_processes(launcher_pid: int) -> dict[int, int]:
    """`{rank: process id}` of the workers a launcher started (Linux /proc: its children and their RANK)."""
    ranks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        rank = next((int(item[5:]) for item in environ if item.startswith(b"RANK=")), None)
        if parent == launcher_pid and rank is not None:
            ranks[rank] = int(entry.name)
    return ranks


LINUX_PROC = Path("/proc/self/environ").exists()
