"""Load balancing (REFERENCE.md §4): the auxiliary loss and its annealed weight."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def load_balancing_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_aux = E · Σ_j f_j · P_j over the dynamic (routed + null) experts of one layer.

    logits [N, E] and mask [N, E] for the non-padding tokens only. f_j is the fraction of tokens
    that selected expert j; P_j the mean of the softmax renormalised over each token's selection.
    """
    if logits.shape[0] == 0:
        return logits.new_zeros((), dtype=torch.float32)
    probs = torch.softmax(logits.float().masked_fill(~mask, -torch.inf), dim=-1)
    f = mask.float().mean(dim=0)
    p = probs.mean(dim=0)
    return logits.shape[-1] * torch.sum(f * p)


@dataclass
class AuxLossSchedule:
    """Weight of the aux loss: linear from `start` to `end` over `steps` optimizer steps, then flat.

    Counts optimizer steps (call `step()` after each) and checkpoints its count, unlike the
    released code which counts micro-batches and restarts from zero on resume.
    """

    start: float = 0.025
    end: float = 0.001
    steps: int = 10_000
    current_step: int = 0

    def weight(self) -> float:
        if self.steps <= 0:
            return self.end
        frac = min(self.current_step / self.steps, 1.0)
        return self.start + (self.end - self.start) * frac

    def step(self) -> None:
        self.current_step += 1

    def state_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "steps": self.steps, "current_step": self.current_step}

    def load_state_dict(self, state: dict) -> None:
        self.start, self.end = float(state["start"]), float(state["end"])
        self.steps, self.current_step = int(state["steps"]), int(state["current_step"])
