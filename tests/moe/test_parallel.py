"""Expert parallelism with 2 CPU processes (gloo): the same outputs and gradients as one process,
also when one process's experts receive no token."""

import copy
import json
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from unimoe_audio.errors import UniMoEError
from unimoe_audio.moe import DCMoE, DCMoEConfig, dispatch
from unimoe_audio.moe.parallel import expert_parameter_names, shard_experts

TOKENS, D = 24, 16  # per process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # identical layer, data and probe on every process
        layer = DCMoE(DCMoEConfig(hidden_size=D, num_routed=4, routed_size=8, num_null=1, num_shared=1, shared_size=8,
                                  router_jitter=0.0))
        x_all = torch.randn(world * TOKENS, D, requires_grad=True)
        probe = torch.randn(world * TOKENS, D)
        # One process: the mean over ranks of each rank's loss, as data parallelism defines it.
        ref = layer(x_all).hidden_states
        ((ref * probe).sum() / world).backward()

        ep = copy.deepcopy(layer)
        ep.zero_grad()
        shard_experts(ep)
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(ep, expert_parameter_names(ep))
        ddp = DistributedDataParallel(ep)
        mine = slice(rank * TOKENS, (rank + 1) * TOKENS)
        x = x_all.detach()[mine].clone().requires_grad_()
        out = ddp(x).hidden_states
        (out * probe[mine]).sum().backward()

        local = slice(rank * 2, rank * 2 + 2)
        errors = {
            "output": (out - ref[mine]).abs().max().item(),
            "input_grad": (x.grad / world - x_all.grad[mine]).abs().max().item(),  # DDP averages parameters only
            "gate_grad": (ep.gate.weight.grad - layer.gate.weight.grad).abs().max().item(),
            "shared_grad": (ep.shared_down.weight.grad - layer.shared_down.weight.grad).abs().max().item(),
        }
        for name in ("w_gate", "w_up", "w_down"):
            mine_grad, full = getattr(ep.experts, name).grad, getattr(layer.experts, name).grad[local]
            errors[f"{name}_grad"] = (mine_grad - full).abs().max().item()
            errors[f"{name}_grad_size"] = full.abs().max().item()
        # Every token chooses experts 0 and 1 (rank 0's), none chooses rank 1's; with the sorted dispatch
        # (always on GPU) rank 1 must still join the backward exchanges, or rank 0 waits forever.
        dispatch.SMALL_EXPERT = 0
        idle = copy.deepcopy(layer)
        with torch.no_grad():
            idle.gate.weight.zero_()
            idle.gate.weight[:2] = 1.0
        shard_experts(idle)
        positive = x_all.detach()[mine].abs().requires_grad_()
        (idle(positive).hidden_states * probe[mine]).sum().backward()
        errors["idle_grad"] = idle.experts.w_up.grad.abs().max().item() if rank == 1 else 0.0
        errors["idle_input_grad_missing"] = float(positive.grad is None)
        try:
            shard_experts(DCMoE(DCMoEConfig(hidden_size=D, num_routed=3, routed_size=8)))
            errors["layout_error"] = ""
        except UniMoEError as err:
            errors["layout_error"] = str(err)
        with open(os.path.join(out_dir, f"{rank}.json"), "w") as f:
            json.dump(errors, f)
    finally:
        dist.destroy_process_group()


def test_two_expert_parallel_processes_match_one_process_outputs_and_gradients(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2)
    for rank in range(2):
        errors = json.loads((tmp_path / f"{rank}.json").read_text())
        assert "cannot be split evenly over 2" in errors.pop("layout_error")
        for name in ("w_gate", "w_up", "w_down"):
            assert errors.pop(f"{name}_grad_size") > 1e-3  # the shard's experts did get tokens
        assert max(errors.values()) < 1e-5, errors
