"""The Dynamic-Capacity MoE layer (paper §III-B): routed, null and shared experts, Top-P routing."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unimoe_audio.errors import UniMoEError
from unimoe_audio.moe.balance import load_balancing_loss
from unimoe_audio.moe.experts import RoutedExperts
from unimoe_audio.moe.routing import official_weights, top_k_routing, top_p_routing

ROUTINGS = ("top_p", "top_k")
WEIGHTINGS = ("paper", "official")


@dataclass
class DCMoEConfig:
    """Paper defaults (REFERENCE.md §2): 8 routed × 2752, 1 null, 2 shared × 1376, p = 0.7."""

    hidden_size: int = 2048
    num_routed: int = 8
    routed_size: int = 2752
    num_null: int = 1
    num_shared: int = 2
    shared_size: int = 1376
    top_p: float = 0.7
    routing: str = "top_p"
    top_k: int | None = None
    weighting: str = "paper"
    router_jitter: float = 0.01
    init_std: float = 0.02

    def __post_init__(self) -> None:
        def bad(msg: str) -> UniMoEError:
            return UniMoEError(f"invalid DCMoEConfig: {msg}")

        if self.hidden_size <= 0:
            raise bad(f"hidden_size must be positive, got {self.hidden_size}")
        if self.num_routed <= 0:
            raise bad(f"num_routed must be at least 1, got {self.num_routed}")
        if self.routed_size <= 0:
            raise bad(f"routed_size must be positive, got {self.routed_size}")
        if self.num_null < 0 or self.num_shared < 0:
            raise bad("num_null and num_shared cannot be negative")
        if self.num_shared and self.shared_size <= 0:
            raise bad(f"shared_size must be positive when num_shared > 0, got {self.shared_size}")
        if not 0.0 < self.top_p <= 1.0:
            raise bad(f"top_p must be in (0, 1], got {self.top_p}")
        if self.routing not in ROUTINGS:
            raise bad(f"routing must be one of {ROUTINGS}, got {self.routing!r}")
        if self.weighting not in WEIGHTINGS:
            raise bad(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.routing == "top_k":
            if self.top_k is None:
                raise bad("routing='top_k' needs top_k (the fixed number of experts per token)")
            if not 1 <= self.top_k <= self.num_dynamic:
                raise bad(f"top_k must be in [1, {self.num_dynamic}], got {self.top_k}")
        if not 0.0 <= self.router_jitter < 1.0:
            raise bad(f"router_jitter must be in [0, 1), got {self.router_jitter}")

    @property
    def num_dynamic(self) -> int:
        """Experts the router chooses among: routed + null."""
        return self.num_routed + self.num_null

    @property
    def max_experts_per_token(self) -> int:
        if self.routing == "top_k":
            return self.top_k
        return math.ceil(self.top_p * self.num_dynamic - 1e-9)

    def to_dict(self) -> dict:
        return asdict(self)


class Router(nn.Linear):
    """The gate: a bias-free Linear evaluated in fp32 whatever the weights' dtype (REFERENCE §3).

    Called as a module (not read as `.weight`), so LoRA on the gate applies."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.float(), self.weight.float())


@dataclass
class MoEOutput:
    hidden_states: torch.Tensor  # shape of the input
    aux_loss: torch.Tensor  # unweighted scalar (fp32); 0 under torch.inference_mode()
    router_logits: torch.Tensor  # [N, N_r + N_n + N_s] fp32
    expert_mask: torch.Tensor  # [N, N_r + N_n] bool (all False for padding tokens)
    num_experts: torch.Tensor  # [N] routed experts computed per token (null excluded)


class DCMoE(nn.Module):
    """Drop-in FFN: shared experts always on, routed/null experts chosen per token by the gate.

    The gate is one bias-free Linear(D, N_r + N_n + N_s), rows ordered routed, null, shared as
    in the released checkpoint. With weighting="paper" the shared rows are unused (shared experts
    join at full weight); with "official" they enter the released rule's second softmax.
    """

    def __init__(self, config: DCMoEConfig):
        super().__init__()
        self.config = config
        c = config
        self.top_p = c.top_p  # inference-time override: set layer.top_p or pass top_p= to forward
        self.gate = Router(c.hidden_size, c.num_dynamic + c.num_shared, bias=False)
        nn.init.normal_(self.gate.weight, std=c.init_std)
        self.experts = RoutedExperts(c.num_routed, c.hidden_size, c.routed_size, c.init_std)
        if c.num_shared:
            # All shared experts fused into one GEMM pair: [gate | up] of width 2·N_s·F_s, then down.
            self.shared_gate_up = nn.Linear(c.hidden_size, 2 * c.num_shared * c.shared_size, bias=False)
            self.shared_down = nn.Linear(c.num_shared * c.shared_size, c.hidden_size, bias=False)
            nn.init.normal_(self.shared_gate_up.weight, std=c.init_std)
            nn.init.normal_(self.shared_down.weight, std=c.init_std)

    def _shared(self, x: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
        """Sum of shared experts on x [N, D]; `scale` [N, N_s] weights each expert (None = 1)."""
        gate, up = self.shared_gate_up(x).chunk(2, dim=-1)
        h = F.silu(gate) * up  # [N, N_s * F_s]
        if scale is not None:
            n, s = scale.shape
            h = (h.view(n, s, -1) * scale[:, :, None].to(h.dtype)).view(n, -1)
        return self.shared_down(h)

    def _route(self, logits: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
        if self.config.routing == "top_k":
            return top_k_routing(logits, self.config.top_k)
        return top_p_routing(logits, top_p)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None, top_p: float | None = None) -> MoEOutput:
        """x [..., D]; pad_mask [...] bool, True = padding (no experts, not in loss or stats).
        Statistics by task are collected outside the layer (`RoutingStats`) from `expert_mask`."""
        c = self.config
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # [N, D]
        valid = None if pad_mask is None else ~pad_mask.reshape(-1)  # [N]; None: every token is real

        router_in = x.float()
        if self.training and c.router_jitter > 0:
            router_in = router_in * torch.empty_like(router_in).uniform_(1 - c.router_jitter, 1 + c.router_jitter)
        logits = self.gate(router_in)  # [N, E_dyn + N_s], fp32
        dyn_logits, shared_logits = logits[:, : c.num_dynamic], logits[:, c.num_dynamic:]

        mask, weights = self._route(dyn_logits, self.top_p if top_p is None else top_p)
        shared_scale = None
        if c.weighting == "official":
            weights, shared_scale = official_weights(dyn_logits, shared_logits, mask)
        if valid is not None:
            mask = mask & valid[:, None]
            weights = weights * valid[:, None]

        routed_mask = mask[:, : c.num_routed]
        out = self.experts(x, routed_mask, weights[:, : c.num_routed])
        if c.num_shared:
            out = out + self._shared(x, shared_scale)
        if valid is not None:
            out = out * valid[:, None].to(out.dtype)

        # generation runs under inference mode and has no use for the loss: skip its softmax
        if torch.is_inference_mode_enabled():
            aux = x.new_zeros((), dtype=torch.float32)
        elif valid is None:
            aux = load_balancing_loss(dyn_logits, mask)
        else:
            aux = load_balancing_loss(dyn_logits[valid], mask[valid])
        return MoEOutput(
            hidden_states=out.reshape(shape),
            aux_loss=aux,
            router_logits=logits,
            expert_mask=mask,
            num_experts=routed_mask.sum(dim=-1),
        )
