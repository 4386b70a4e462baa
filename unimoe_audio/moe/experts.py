"""Expert parameters: the SwiGLU FFN and the stacked routed-expert weights (paper §III-B)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unimoe_audio.moe.dispatch import dispatch


class SwiGLU(nn.Module):
    """Dense FFN: down(silu(gate(x)) * up(x)), bias-free (the backbone's MLP)."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class RoutedExperts(nn.Module):
    """E SwiGLU experts of width F stored stacked, so dense FFNs split into them by slices.

    w_gate [E, F, D], w_up [E, F, D], w_down [E, D, F] — expert e is the SwiGLU with
    gate_proj.weight = w_gate[e], up_proj.weight = w_up[e], down_proj.weight = w_down[e].
    """

    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int, init_std: float = 0.02):
        super().__init__()
        shape_in = (num_experts, intermediate_size, hidden_size)
        self.w_gate = nn.Parameter(torch.randn(shape_in) * init_std)
        self.w_up = nn.Parameter(torch.randn(shape_in) * init_std)
        self.w_down = nn.Parameter(torch.randn(num_experts, hidden_size, intermediate_size) * init_std)

    @property
    def num_experts(self) -> int:
        return self.w_gate.shape[0]

    def forward(self, x: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Weighted sum of the selected experts per token: x [N, D], mask / weights [N, E] -> [N, D].

        The weights are read here, inside the module's own forward, so a wrapper that re-parametrises
        them for the duration of the call (peft's LoRA on parameters, FSDP's unsharding) takes effect."""
        return dispatch(x, mask, weights, self.w_gate, self.w_up, self.w_down)
