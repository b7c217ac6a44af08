"""Several processes on one job: which share of the work this process does, and waiting for the others.

`accelerate launch --num_processes N -m hf_metaembed ...` and `torchrun --nproc_per_node N -m hf_metaembed ...` start
N copies of one command; each reads its rank from the environment the launcher sets (`RANK`, `WORLD_SIZE`,
`LOCAL_RANK`) through accelerate's `PartialState`, which also joins the process group (gloo on CPUs, nccl on GPUs) and
picks the process's device (its own GPU). A process started without a launcher is a world of one and never touches
`torch.distributed`.

Not model code: the model files never import it.
"""

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch

# ranks wait for each other at the start and the end of a job; a long job's last batches may keep one rank busy
PROCESS_GROUP_TIMEOUT = timedelta(hours=6)


@dataclass
class Workers:
    """This process's place in the job: `rank` of `world_size` processes, and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    state: Any = None  # accelerate's PartialState when there are several processes

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every process reaches this point (nothing to wait for in a world of one)."""
        if self.world_size > 1:
            self.state.wait_for_everyone()

    def share(self, count: int, offset: int = 0) -> range:
        """The positions `0..count-1` this process takes when work is dealt out round-robin, starting the deal at
        position `-offset` (so that a deal continued over several lists keeps taking turns)."""
        return range((self.rank - offset) % self.world_size, count, self.world_size)


def launched_world_size() -> int:
    """Processes the launcher started (`WORLD_SIZE`; 1 without a launcher)."""
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        return 1


def launched_rank() -> int:
    """This process's rank among those the launcher started (`RANK`; 0 without a launcher)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def resolve_device(name: str) -> torch.device:
    """The device named by `name` (`auto`: cuda when available, else cpu) in a single process."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def current_workers(device: str = "auto") -> Workers:
    """The `Workers` of this process.

    Args:
        device: `auto`, `cpu`, `cuda` or `cuda:N`. Under a launcher `auto` and `cuda` give every process its own GPU
            (`cuda:LOCAL_RANK`, as accelerate assigns it) and `cpu` keeps every process on the CPU (gloo).
    """
    if launched_world_size() == 1:
        return Workers(device=resolve_device(device))
    from accelerate import PartialState

    # without cpu=True accelerate takes a launch on a machine without GPUs for a single process
    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    state = PartialState(cpu=on_cpu, timeout=PROCESS_GROUP_TIMEOUT)
    if state.num_processes != launched_world_size():
        raise RuntimeError(
            f"the launcher started {launched_world_size()} processes but accelerate sees {state.num_processes}; "
            "launch with `accelerate launch` or `torchrun`, and pass --device cpu on machines without GPUs"
        )
    chosen = state.device if device in ("auto", "cuda") else torch.device(device)
    return Workers(rank=state.process_index, world_size=state.num_processes, device=chosen, state=state)


__all__ = [
    "PROCESS_GROUP_TIMEOUT",
    "Workers",
    "current_workers",
    "launched_rank",
    "launched_world_size",
    "resolve_device",
]
