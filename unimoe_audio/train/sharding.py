"""FSDP: every parameter, gradient and optimizer state sharded over the processes (`parallel: fsdp`).

PyTorch's FSDP2 (`torch.distributed.fsdp.fully_shard`): each transformer block is one shard unit
(its weights are all-gathered just before its forward and backward and freed after), then the
root takes the embeddings, final norm and head. On GPU the gathered weights are cast to bf16 for
compute while gradients are reduced and the optimizer steps in fp32 (MixedPrecisionPolicy); on
CPU everything stays fp32. Optionally each block recomputes its activations in backward
(`activation_checkpointing`), trading one more forward for activations of one block at a time.

Checkpoints are directories `checkpoints/step-N.dcp/` written by torch.distributed.checkpoint:
every process writes its own shards of the model and optimizer, process 0 adds `trainer.pt`
(step, scheduler, sampler, RNG states of every process). They are written under a temporary name
and renamed when complete, so a killed run leaves the previous checkpoint as the newest.
`read_model` loads the whole model from one in a single process, without a process group
(`unimoe-audio eval-checkpoints` does this).
"""

from __future__ import annotations

import copy
import functools
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_state_dict)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.utils.checkpoint import checkpoint

from unimoe_audio.model.transformer import Block

TRAINER_STATE = "trainer.pt"  # the small, replicated part of an FSDP checkpoint


def shard(model: nn.Module, world_size: int, device: torch.device, activation_checkpointing: bool) -> nn.Module:
    """Shard `model` in place (blocks, then the root) and return a parameter-free copy of the
    unsharded model, the skeleton `gather` fills at the end of training."""
    skeleton = copy.deepcopy(model, memo={id(p): nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
                                          for p in model.parameters()})
    mesh = init_device_mesh(device.type, (world_size,))
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if device.type == "cuda"
              else MixedPrecisionPolicy())
    for block in [m for m in model.modules() if isinstance(m, Block)]:
        if activation_checkpointing:
            # Checkpoint inside the FSDP unit (as torchtitan does), without renaming any parameter.
            block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return skeleton


def gather(model: nn.Module, skeleton: nn.Module) -> nn.Module:
    """The trained weights, unsharded, in `skeleton` on every process (a collective)."""
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    skeleton.load_state_dict(full, assign=True)
    return skeleton


def save(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, trainer_state: dict, is_main: bool) -> None:
    """Write the sharded checkpoint directory `path` atomically (every process calls this)."""
    tmp = path.with_name(f".{path.name}.tmp")
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a run killed while saving
    dist.barrier()
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=tmp)
    if is_main:
        torch.save(trainer_state, tmp / TRAINER_STATE)
        tmp.rename(path)
    dist.barrier()


def load(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device) -> dict:
    """Restore model and optimizer shards from `path` (resharding if needed); returns trainer.pt."""
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optim_state}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    return torch.load(path / TRAINER_STATE, map_location=device, weights_only=False)


def read_model(path: Path, model: nn.Module) -> dict:
    """Fill the unsharded `model` from checkpoint `path` in this process alone (no process group,
    any number of writers); returns trainer.pt (step, scheduler, ...)."""
    state = {"model": model.state_dict()}
    dcp.load(state, checkpoint_id=path, no_dist=True)
    model.load_state_dict(state["model"])
    return torch.load(path / TRAINER_STATE, map_location="cpu", weights_only=False)
