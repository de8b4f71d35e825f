"""Data-parallel training across processes: torchrun, DistributedDataParallel, lockstep epochs.

Every rank builds the same network from the same seed, trains on its own share of each epoch's
slices (:func:`glioma.dataset.loader.partition`) and averages gradients with the others. Ranks
stop an epoch together, when the first one runs out of batches, so every optimiser and schedule
takes the same steps. Rank 0 validates and writes; it broadcasts each epoch's history row, so
early stopping is decided identically everywhere. The small collectives (flags, losses, rows) go
through a gloo group on the CPU, so that they never wait on the GPU's queue.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from glioma.model.nets import pick_device

log = logging.getLogger(__name__)

#: Long enough for rank 0 to validate and write checkpoints while the other ranks wait.
TIMEOUT = datetime.timedelta(minutes=60)


@dataclass(frozen=True)
class Ranks:
    """Where this process stands among the training processes (one process by default)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    group: Any = None  # the CPU (gloo) process group; None when no process group was joined

    @property
    def main(self) -> bool:
        """True on the rank that validates, logs and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when this process is one rank of a process group."""
        return self.group is not None


SINGLE = Ranks()


def launched() -> bool:
    """True when torchrun (or another launcher) started this process as a rank."""
    return "WORLD_SIZE" in os.environ


def start(device: str | None = None) -> tuple[Ranks, str]:
    """Join the process group torchrun set up (NCCL on CUDA, gloo on the CPU).

    The rank, world size and rendezvous come from the variables torchrun sets (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).

    Args:
        device: ``cpu``, ``cuda`` or None (CUDA when available); on CUDA each rank takes the GPU
            of its local rank.

    Returns:
        This rank's place and the name of its device.

    Raises:
        ValueError: on CUDA, the local rank has no GPU of its own.
    """
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    chosen = pick_device(device)
    if chosen.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"local rank {local_rank} has no GPU: {torch.cuda.device_count()} visible; "
                "start one process per GPU"
            )
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
        dist.init_process_group("nccl", timeout=TIMEOUT, device_id=chosen)
        group = dist.new_group(backend="gloo", timeout=TIMEOUT)
    else:
        dist.init_process_group("gloo", timeout=TIMEOUT)
        group = dist.group.WORLD
    return Ranks(rank, world_size, local_rank, group), str(chosen)


def stop(ranks: Ranks) -> None:
    """Leave the process group (nothing to do in one process)."""
    if ranks.distributed and dist.is_initialized():
        dist.destroy_process_group()


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """Slices per batch on each rank: the global batch split evenly (rounded up)."""
    return max(1, math.ceil(batch_size / world_size))


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """Wrap ``model`` for data-parallel training (gradients averaged across ranks)."""
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def all_true(flag: bool, ranks: Ranks) -> bool:
    """True when ``flag`` is true on every rank."""
    value = torch.tensor([int(flag)])
    dist.all_reduce(value, op=dist.ReduceOp.MIN, group=ranks.group)
    return bool(value.item())


def gather(values: Sequence[float], ranks: Ranks) -> list[list[float]]:
    """Every rank's ``values`` (same length everywhere), in rank order, on every rank."""
    mine = torch.tensor(list(values), dtype=torch.float64)
    out = [torch.empty_like(mine) for _ in range(ranks.world_size)]
    dist.all_gather(out, mine, group=ranks.group)
    return [row.tolist() for row in out]


def broadcast(obj: Any, ranks: Ranks) -> Any:
    """Rank 0's ``obj`` (picklable), on every rank."""
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=ranks.group)
    return box[0]


def lockstep(batches: Iterable[Any], ranks: Ranks) -> Iterator[Any]:
    """Yield ``batches`` while every rank still has one.

    Shares differ by at most one slice, but each DataLoader worker ends on a partial batch, so
    ranks may hold a different number of batches; stopping with the first rank to run out keeps
    the ranks' gradient exchanges paired (a rank waiting for a partner that finished would hang)
    and leaves out at most about one batch per worker and epoch.
    """
    iterator = iter(batches)
    while True:
        batch = next(iterator, None)
        if not all_true(batch is not None, ranks):
            return
        yield batch


def reduce_epoch(trained: dict[str, float], ranks: Ranks) -> dict[str, Any]:
    """Combine the ranks' :func:`train_one_epoch` results: mean loss per slice, slowest time."""
    slices = trained["train_slices"]
    rows = gather([trained["train_loss"] * slices, slices, trained["seconds"]], ranks)
    seen = [int(row[1]) for row in rows]
    log.info("slices trained per rank: %s", seen)
    return {
        "train_loss": sum(row[0] for row in rows) / sum(seen),
        "train_slices": sum(seen),
        "seconds": max(row[2] for row in rows),
    }


def reseed(seed: int, epoch: int, rank: int) -> None:
    """Seed torch for one rank's epoch (e.g. stochastic depth), the same after a resume."""
    torch.manual_seed(seed * 100_003 + epoch * 1_009 + rank)


def check_in_sync(model: nn.Module, ranks: Ranks) -> None:
    """Raise when the ranks' weights differ: they must stay equal under data-parallel training.

    Raises:
        RuntimeError: a rank's weights differ from rank 0's.
    """
    sums = [float(p.detach().double().sum()) for p in model.parameters()]
    gathered = gather(sums, ranks)
    differ = [r for r, row in enumerate(gathered) if row != gathered[0]]
    if differ:
        raise RuntimeError(f"the weights of ranks {differ} differ from rank 0's")
