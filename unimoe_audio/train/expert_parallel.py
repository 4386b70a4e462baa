"""Expert parallelism in training (`parallel: ep`): routed experts split, everything else under DDP.

The processes form groups of `expert_parallel` consecutive ranks (0 = all processes in one group);
each group splits every DCMoE's routed experts among its ranks (`moe/parallel.py`: tokens travel
to their experts' ranks and back all-to-all), and ranks holding the same experts in different
groups average those experts' gradients. The rest of the model is replicated and averaged by DDP,
which leaves the expert shards alone (`expert_parameter_names`). Data is split over all processes
as under DDP, so the run takes the steps one process takes with the same global batch.

What differs from DDP, and is here:
- `clip_grad_norm_`: the global gradient norm counts the replicated gradients once (they are equal
  on every process after DDP's average) and each expert shard once (different on each rank of a
  group, equal across groups), so it is the norm one process computes.
- `full_state` / `load_state`: a checkpoint holds the whole experts, gathered from the group, with
  the optimizer's states for them, so it has exactly the single-process format (one process, or
  `eval-checkpoints`, reads it as is); loading gives each rank its part back.
- The trainer runs the same number of validation forwards on every process (each is a collective)
  and hands back the model with its whole experts at the end (`unshard_experts`).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh

from unimoe_audio.errors import UniMoEError
from unimoe_audio.moe import DCMoE
from unimoe_audio.moe.parallel import WEIGHTS, ExpertParallelExperts, shard_experts
from unimoe_audio.train.distributed import DistInfo


def shard(model: nn.Module, size: int, dist_info: DistInfo) -> None:
    """Split `model`'s routed experts over groups of `size` processes (0: all), in place; a layout
    the processes or the experts do not divide is an error naming the setting."""
    world = dist_info.world_size
    size = size or world
    if world % size:
        raise UniMoEError(f"expert_parallel {size} does not divide the {world} processes; launch a multiple of {size} "
                          f"processes or choose a divisor of {world}")
    counts = {m.config.num_routed for m in model.modules() if isinstance(m, DCMoE)}
    if any(n % size for n in counts):
        raise UniMoEError(f"{sorted(counts)} routed experts per layer cannot be split evenly over expert_parallel "
                          f"{size} processes; choose an expert_parallel that divides them")
    mesh = init_device_mesh(dist_info.device.type, (world // size, size), mesh_dim_names=("replica", "expert"))
    shard_experts(model, mesh.get_group("expert"), mesh.get_group("replica") if world > size else None)


def _shards(model: nn.Module) -> dict[str, ExpertParallelExperts]:
    """Parameter name -> the module holding that expert shard."""
    return {f"{name}.{w}": m for name, m in model.named_modules() if isinstance(m, ExpertParallelExperts) for w in WEIGHTS}


def _owners(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[int, ExpertParallelExperts]:
    """Optimizer parameter index (as in its state_dict) -> the module holding that expert shard."""
    owner = {id(getattr(m, w)): m for m in set(_shards(model).values()) for w in WEIGHTS}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return {i: owner[id(p)] for i, p in enumerate(params) if id(p) in owner}


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Model and optimizer state dicts in the single-process format: each expert tensor gathered
    whole onto the CPU, one at a time (a collective: every process calls it)."""
    shards = _shards(model)
    model_state = {k: shards[k].gather(v).cpu() if k in shards else v for k, v in model.state_dict().items()}
    optim_state = optimizer.state_dict()
    owners = _owners(model, optimizer)
    optim_state["state"] = {i: {k: owners[i].gather(v).cpu() if i in owners and v.dim() else v for k, v in s.items()}
                            for i, s in optim_state["state"].items()}  # new dicts: the optimizer's own stay as they are
    return model_state, optim_state


def load_state(model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict, optim_state: dict) -> None:
    """Load single-process state dicts, each rank taking its part of every expert tensor."""
    shards = _shards(model)
    model.load_state_dict({k: shards[k].part(v) if k in shards else v for k, v in model_state.items()})
    owners = _owners(model, optimizer)
    state = {i: {k: owners[i].part(v) if i in owners and v.dim() else v for k, v in s.items()}
             for i, s in optim_state["state"].items()}
    optimizer.load_state_dict({**optim_state, "state": state})


@torch.no_grad()
def clip_grad_norm_(model: nn.Module, parameters: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clip to the global gradient norm over all processes (see the module docstring); returns it."""
    modules = set(_shards(model).values())
    sharded = {id(getattr(m, w)) for m in modules for w in WEIGHTS}
    some = next(iter(modules))
    device = some.w_gate.device

    def norm(in_shards: bool) -> torch.Tensor:
        grads = [p.grad for p in parameters if p.grad is not None and (id(p) in sharded) == in_shards]
        return nn.utils.get_total_norm(grads).to(device, torch.float32)

    squares = norm(True).square()
    dist.all_reduce(squares, group=some.group)  # every process, even one without expert gradients (frozen)
    total = (norm(False).square() + squares).sqrt()
    nn.utils.clip_grads_with_norm_(parameters, max_norm, total)
    return total
