"""Routing statistics for analysis (paper Fig. 4): experts per token, expert load, null rate."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from unimoe_audio.io import save_figure

ALL = "all"


class RoutingStats:
    """Accumulates, per layer and per task label, how tokens were routed.

    `update(layer, expert_mask, num_routed, valid=None, task_ids=None)` with
    expert_mask [N, N_r + N_n] (routed first, null last), valid [N] bool, task_ids [N] long.
    `task_names` maps task ids to labels for the report.
    """

    def __init__(self, task_names: dict[int, str] | None = None):
        self.task_names = task_names or {}
        # (layer, task) -> dict of numpy accumulators
        self._acc: dict[tuple[int, str], dict[str, np.ndarray | int]] = {}
        self.num_routed: int | None = None

    def _slot(self, layer: int, task: str, num_dynamic: int) -> dict:
        key = (layer, task)
        if key not in self._acc:
            self._acc[key] = {
                "tokens": 0,
                "hist": np.zeros(num_dynamic + 1, dtype=np.int64),  # tokens using k routed experts
                "load": np.zeros(num_dynamic, dtype=np.int64),  # tokens per dynamic expert
            }
        return self._acc[key]

    @torch.no_grad()
    def update(self, layer: int, expert_mask: torch.Tensor, num_routed: int,
               valid: torch.Tensor | None = None, task_ids: torch.Tensor | None = None) -> None:
        self.num_routed = num_routed
        mask = expert_mask.reshape(-1, expert_mask.shape[-1]).bool().cpu()
        keep = torch.ones(mask.shape[0], dtype=torch.bool) if valid is None else valid.reshape(-1).bool().cpu()
        tasks = None if task_ids is None else task_ids.reshape(-1).cpu()
        groups = [(ALL, keep)]
        if tasks is not None:
            for t in torch.unique(tasks[keep]).tolist():
                groups.append((self.task_names.get(t, str(t)), keep & (tasks == t)))
        for name, sel in groups:
            m = mask[sel]
            slot = self._slot(layer, name, mask.shape[1])
            slot["tokens"] += int(m.shape[0])
            k = m[:, :num_routed].sum(dim=1)
            slot["hist"] += np.bincount(k.numpy(), minlength=mask.shape[1] + 1)[: mask.shape[1] + 1]
            slot["load"] += m.sum(dim=0).numpy()

    def to_dict(self) -> dict:
        """{"layers": {layer: {task: {tokens, experts_per_token_hist, expert_load, null_rate, mean_experts}}}}."""
        out: dict = defaultdict(dict)
        for (layer, task), s in sorted(self._acc.items()):
            tokens = max(s["tokens"], 1)
            hist = s["hist"][: self.num_routed + 1]
            load = s["load"]
            out[str(layer)][task] = {
                "tokens": s["tokens"],
                "experts_per_token_hist": (hist / tokens).round(4).tolist(),
                "expert_load": (load[: self.num_routed] / tokens).round(4).tolist(),
                "null_rate": round(float(load[self.num_routed:].sum() / tokens), 4),
                "mean_experts": round(float((np.arange(len(hist)) * hist).sum() / tokens), 4),
            }
        return {"num_routed": self.num_routed, "layers": dict(out)}

    def plot(self, path: str | Path) -> Path:
        """PNG: per layer, share of tokens using 0..k routed experts; per expert load by task."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        data = self.to_dict()["layers"]
        layers = sorted(data, key=int)
        tasks = sorted({t for layer in layers for t in data[layer]}, key=lambda t: (t != ALL, t))
        fig, (ax_hist, ax_load) = plt.subplots(1, 2, figsize=(12, 4.5))
        bottom = np.zeros(len(layers))
        k_max = self.num_routed + 1
        colors = plt.cm.viridis(np.linspace(0, 1, k_max))
        for k in range(k_max):
            share = np.array([data[layer][ALL]["experts_per_token_hist"][k] for layer in layers])
            ax_hist.bar(layers, share, bottom=bottom, color=colors[k], label=f"{k}")
            bottom += share
        ax_hist.set(xlabel="layer", ylabel="share of tokens", title="routed experts per token")
        ax_hist.legend(title="experts", fontsize=7, ncol=2)
        width = 0.8 / len(tasks)
        experts = np.arange(self.num_routed + 1)
        for i, task in enumerate(tasks):
            load = np.mean([data[layer][task]["expert_load"] + [data[layer][task]["null_rate"]]
                            for layer in layers if task in data[layer]], axis=0)
            ax_load.bar(experts + i * width, load, width=width, label=task)
        ax_load.set_xticks(experts + 0.4 - width / 2, [str(e) for e in experts[:-1]] + ["null"])
        ax_load.set(xlabel="expert", ylabel="activation rate (mean over layers)", title="expert load by task")
        ax_load.legend(fontsize=7)
        return save_figure(fig, path)
