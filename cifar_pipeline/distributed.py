"""Data-parallel training on one node: one process per GPU (or CPU worker), launched by torchrun.

The train step is launched with `nproc=N`: it replaces itself with
`torchrun --standalone --nproc-per-node N` running the same command, and each process
finds its rank in the environment torchrun sets. Rank 0 alone talks to MLflow; every
rank trains its share of each global batch, and DDP averages the gradients.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)

# torchrun sets these in every process it starts
_LAUNCHED_BY_TORCHRUN = "LOCAL_RANK"


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, global_batch: int) -> slice:
        """This rank's rows of a global batch; `global_batch` must divide by the world size."""
        per_rank = global_batch // self.size
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)


SINGLE = World()


def launched_by_torchrun() -> bool:
    return _LAUNCHED_BY_TORCHRUN in os.environ


def world_from_env() -> World:
    if not launched_by_torchrun():
        return SINGLE
    return World(
        rank=int(os.environ["RANK"]),
        local_rank=int(os.environ["LOCAL_RANK"]),
        size=int(os.environ["WORLD_SIZE"]),
    )


def relaunch_with_torchrun(nproc: int, module: str, argv: Sequence[str]) -> None:
    """Replace this process with torchrun starting `nproc` copies of `python -m module argv`.

    exec, not a child process: signals (a `docker stop`) reach torchrun, which passes
    them on to the ranks, and the exit status is torchrun's.
    """
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", module, *argv]  # fmt: skip
    log.info("launching %d processes: %s", nproc, " ".join(command))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)


def device_for(world: World, device: torch.device) -> torch.device:
    """Each rank's own GPU; CPU ranks share the CPU."""
    if device.type == "cuda" and world.size > 1:
        torch.cuda.set_device(world.local_rank)
        return torch.device("cuda", world.local_rank)
    return device


@contextmanager
def process_group(world: World, device: torch.device) -> Iterator[None]:
    """NCCL between GPUs, gloo between CPU processes; nothing for a single process."""
    if world.size == 1:
        yield
        return
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def all_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    if world.size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def replica_divergence(model: nn.Module, world: World) -> float:
    """Largest difference between any rank's parameters and rank 0's: 0 when DDP kept them in step.

    Parameters only: batch-norm running statistics are each rank's own until DDP
    broadcasts rank 0's at the next forward pass.
    """
    if world.size == 1:
        return 0.0
    mine = torch.cat([p.detach().float().flatten() for p in model.parameters()])
    reference = mine.clone()
    dist.broadcast(reference, src=0)
    difference = (mine - reference).abs().max()
    dist.all_reduce(difference, op=dist.ReduceOp.MAX)
    return float(difference.item())
