"""Token dispatch: group (token, expert) pairs by expert, run each expert once, add back.

One sort of the selected pairs, one host sync for the per-expert counts, then a loop over the
E experts (not over tokens or k-groups); experts with no tokens are skipped. No
[tokens × experts × hidden] intermediate is ever built.
"""

from __future__ import annotations

import torch

from unimoe_audio.moe.experts import RoutedExperts, swiglu


def dispatch(x: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor, experts: RoutedExperts) -> torch.Tensor:
    """Weighted sum of the selected routed experts per token.

    x [N, D]; mask [N, E] bool selection and weights [N, E] (E = routed experts only).
    Returns [N, D].
    """
    # mask.T.nonzero() lists pairs ordered by expert, then token: each expert's tokens are contiguous.
    expert_idx, token_idx = mask.T.nonzero(as_tuple=True)
    counts = torch.bincount(expert_idx, minlength=experts.num_experts).tolist()
    rows = x.index_select(0, token_idx)  # [P, D]
    pair_weight = weights[token_idx, expert_idx].to(x.dtype)[:, None]  # [P, 1]
    # unbind once: its backward stacks the per-expert gradients in one write, where indexing
    # w[e] per expert would materialise a full-size zero gradient for every expert.
    gates, ups, downs = experts.w_gate.unbind(0), experts.w_up.unbind(0), experts.w_down.unbind(0)
    out = torch.zeros_like(x)
    start = 0
    for e, count in enumerate(counts):
        if count == 0:
            continue
        end = start + count
        y = swiglu(rows[start:end], gates[e], ups[e], downs[e]) * pair_weight[start:end]
        out.index_add_(0, token_idx[start:end], y)
        start = end
    return out
