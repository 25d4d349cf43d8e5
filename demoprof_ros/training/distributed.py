"""The processes of a run: torchrun's process group and the device, seeding, and the autocast precision.

One process: rank 0 of 1, nothing initialised. Under torchrun (WORLD_SIZE > 1) every rank joins the group
(NCCL on GPUs, gloo on CPU); validation, checkpoints and logs happen on rank 0 only (`Dist.main`).
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .config import TrainConfigError


@dataclass
class Dist:
    """This process's place in the run: rank, number of processes, local rank and device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's object on every rank."""
        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def setup_distributed(device: str) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on CUDA, gloo on CPU); pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    want = device if device not in ("", "auto") else ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(want)
    except RuntimeError:
        raise TrainConfigError(f"device={device!r}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainConfigError(f"device={device!r}: CUDA is not available here; use --device cpu")
        if world > 1:
            dev = torch.device("cuda", local)
        if dev.index is not None:
            torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world, local, dev)


def teardown_distributed(env: Dist) -> None:
    """Leave the process group (after the last seed)."""
    if env.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (the data order and masks get their own sub-seeds, `subseed`)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def subseed(*parts: int) -> int:
    """A well-mixed 32-bit seed from several integers (seed, epoch, rank, ...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype, or None for plain fp32 (always on CPU)."""
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16



def mean_across(value: float, env: Dist, device: torch.device) -> float:
    """The mean of a per-rank number over every rank (the number itself in one process)."""
    if env.world_size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t) / env.world_size
