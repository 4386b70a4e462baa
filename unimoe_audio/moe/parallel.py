"""Expert parallelism: the routed experts of a DCMoE split across ranks, tokens exchanged all-to-all.

Each of the W ranks of the expert-parallel group holds E / W consecutive experts (rank r: experts
r·E/W … (r+1)·E/W − 1) and routes its own tokens with the replicated gate. A forward then

1. lists its (token, expert) pairs ordered by expert, hence by owning rank;
2. tells every rank how many rows it will send (all_to_all_single of the counts);
3. sends the token rows and their local expert ids (all_to_all_single, uneven splits);
4. runs its local experts once each on what it received (`dispatch`, one-hot selection);
5. sends the outputs back the way they came and adds them, weighted, to their tokens.

The row exchanges use the functional collective `all_to_all_single_autograd` (what PyTorch points
to in place of the deprecated `torch.distributed.nn.functional.all_to_all_single`), whose backward is the
reverse exchange, so gradients reach the experts from every rank's tokens. gloo (CPU) implements
all_to_all with uneven splits; NCCL does on GPU.

Data parallelism composes: the gate, shared experts and the rest of the model are replicated and
averaged by DDP as usual; expert shards are not (`expert_parameter_names` lists them for DDP's
ignore list), and each shard's gradient is divided by the group size, so it equals the gradient of
the mean over ranks' losses — what DDP computes for the replicated weights. With W_ep < world,
ranks holding the same shard average it over their data-parallel group (`replica_group`).
`unshard_experts` puts the whole experts back (every rank gathers them), so a trained model is
saved, loaded and run like one that was never split.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._functional_collectives import all_to_all_single_autograd

from unimoe_audio.errors import UniMoEError
from unimoe_audio.moe.dispatch import all_experts, dispatch
from unimoe_audio.moe.experts import RoutedExperts
from unimoe_audio.moe.layer import DCMoE

WEIGHTS = ("w_gate", "w_up", "w_down")  # the stacked expert weights, [E, ...] each


class ExpertParallelExperts(nn.Module):
    """This rank's share of E routed experts; `forward(x, mask, weights)` like `RoutedExperts`."""

    def __init__(self, experts: RoutedExperts, group: dist.ProcessGroup | None = None,
                 replica_group: dist.ProcessGroup | None = None):
        super().__init__()
        self.group, self.replica_group = group, replica_group
        self.world, self.rank = dist.get_world_size(group), dist.get_rank(group)
        total = experts.num_experts
        if total % self.world:
            raise UniMoEError(f"{total} routed experts cannot be split evenly over {self.world} expert-parallel ranks; "
                              f"use a group size that divides {total}")
        self.num_experts, self.local = total, total // self.world
        for name in WEIGHTS:
            full = getattr(experts, name)
            setattr(self, name, nn.Parameter(self.part(full.detach()).clone(), full.requires_grad))
            if full.requires_grad:  # frozen experts (the warm-up stage) have no gradient to average
                getattr(self, name).register_hook(self._average)

    def part(self, full: torch.Tensor) -> torch.Tensor:
        """This rank's experts of a tensor over all E experts ([E, ...] -> [E / W, ...])."""
        return full[self.rank * self.local: (self.rank + 1) * self.local]

    def gather(self, shard: torch.Tensor) -> torch.Tensor:
        """The tensor over all E experts from every rank's part ([E / W, ...] -> [E, ...]; a collective)."""
        parts = [torch.empty_like(shard) for _ in range(self.world)]
        dist.all_gather(parts, shard.detach().contiguous(), group=self.group)
        return torch.cat(parts)

    def _average(self, grad: torch.Tensor) -> torch.Tensor:
        """Mean over the expert-parallel ranks' losses (and over replicas of this shard, if any)."""
        grad = grad / self.world
        if self.replica_group is not None:
            grad = grad.clone()
            dist.all_reduce(grad, group=self.replica_group)
            grad /= dist.get_world_size(self.replica_group)
        return grad

    def forward(self, x: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """x [N, D] this rank's tokens; mask / weights [N, E] over all E experts -> [N, D]."""
        expert_idx, token_idx = mask.T.nonzero(as_tuple=True)  # ordered by expert, so by owning rank
        owner = expert_idx // self.local
        send = torch.bincount(owner, minlength=self.world)  # [W] rows to each rank
        recv = torch.empty_like(send)
        dist.all_to_all_single(recv, send, group=self.group)
        send_sizes, recv_sizes = send.tolist(), recv.tolist()
        local_ids = torch.empty(sum(recv_sizes), dtype=torch.long, device=x.device)
        dist.all_to_all_single(local_ids, expert_idx - owner * self.local, recv_sizes, send_sizes, group=self.group)
        rows = all_to_all_single_autograd(x.index_select(0, token_idx), recv_sizes, send_sizes,
                                          self.group or dist.group.WORLD)  # [M, D] rows for my experts
        one_hot = nn.functional.one_hot(local_ids, self.local).bool()  # [M, E_local]
        # With no rows `dispatch` may return a constant; `all_experts` keeps an empty result in the
        # graph, so this rank still takes part in the backward exchanges the others run.
        y = (dispatch if len(rows) else all_experts)(rows, one_hot, one_hot.to(rows.dtype), self.w_gate, self.w_up,
                                                     self.w_down)
        back = all_to_all_single_autograd(y, send_sizes, recv_sizes, self.group or dist.group.WORLD)  # [P, D], my pairs' order
        pair_weight = weights[token_idx, expert_idx].to(x.dtype)[:, None]
        return torch.zeros_like(x).index_add_(0, token_idx, back * pair_weight)


def shard_experts(model: nn.Module, group: dist.ProcessGroup | None = None,
                  replica_group: dist.ProcessGroup | None = None) -> nn.Module:
    """Replace every DCMoE's `experts` in `model` (in place) by this rank's expert-parallel share."""
    layers = [m for m in model.modules() if isinstance(m, DCMoE)]
    if not layers:
        raise UniMoEError("expert parallelism needs a model with DCMoE layers; this one is dense")
    if not all(isinstance(layer.experts, RoutedExperts) for layer in layers):
        raise UniMoEError("expert parallelism splits plain routed experts, but these are wrapped (LoRA on the "
                          "routed experts?); leave `routed` out of the LoRA targets or train without expert parallelism")
    for layer in layers:
        layer.experts = ExpertParallelExperts(layer.experts, group, replica_group)
    return model


def unshard_experts(model: nn.Module) -> nn.Module:
    """Put every DCMoE's whole `RoutedExperts` back in `model` (in place; a collective)."""
    for layer in [m for m in model.modules() if isinstance(m, DCMoE) and isinstance(m.experts, ExpertParallelExperts)]:
        shards = layer.experts
        full = {name: nn.Parameter(shards.gather(getattr(shards, name)), getattr(shards, name).requires_grad)
                for name in WEIGHTS}
        with torch.device("meta"):  # no memory and no random init for weights replaced next
            layer.experts = RoutedExperts(shards.num_experts, full["w_gate"].shape[2], full["w_gate"].shape[1])
        for name, weight in full.items():
            setattr(layer.experts, name, weight)
    return model


def expert_parameter_names(model: nn.Module) -> list[str]:
    """Names of the sharded expert weights: DDP must not average them across expert-parallel ranks
    (`DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, names)`)."""
    return [f"{name}.{p}" for name, m in model.named_modules() if isinstance(m, ExpertParallelExperts) for p in WEIGHTS]
