"""Process layout: one process by default; torchrun / accelerate launch set RANK, WORLD_SIZE, LOCAL_RANK.

The same code runs single-process, under `torchrun --nproc-per-node N` or under
`accelerate launch --multi_gpu`: the launcher's environment decides. gloo on CPU, NCCL on GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from unimoe_audio.errors import UniMoEError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise UniMoEError(f"environment variable {name}={value!r} must be an integer") from None


def setup(device: str | None = None) -> DistInfo:
    """Read the launcher's environment, pick the device, join the process group if there is one."""
    rank, world = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise UniMoEError(f"RANK={rank} / WORLD_SIZE={world} are inconsistent")
    if device is None:
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UniMoEError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UniMoEError(f"device {device!r} asked for, but this PyTorch sees no CUDA GPU")
        if dev.index is None:  # plain `cuda`: this process's GPU (the launcher's LOCAL_RANK)
            dev = torch.device("cuda", local)
        if dev.index >= torch.cuda.device_count():
            raise UniMoEError(f"device {dev} does not exist: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistInfo(rank, world, local, dev)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over processes (identity when single-process)."""
    if info.enabled:
        values = values.clone()
        dist.all_reduce(values)
    return values


def all_sum_named(values: dict[str, float], info: DistInfo, device) -> dict[str, float]:
    """Sum named numbers over processes (every process passes the same names)."""
    names = sorted(values)
    summed = all_sum(torch.tensor([values[n] for n in names], dtype=torch.float64, device=device), info)
    return dict(zip(names, summed.cpu().tolist()))


def gather_objects(obj, info: DistInfo) -> list:
    """Every process's `obj`, in rank order (a one-element list when single-process)."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out
