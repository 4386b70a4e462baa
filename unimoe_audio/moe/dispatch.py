"""Token dispatch: group (token, expert) pairs by expert, run each expert once, add back.

One sort of the selected pairs, one host sync for the per-expert counts, a loop over the E
experts (not over tokens or k-groups) that skips experts with no tokens, and one scatter-add
of all pairs back to their tokens. No [tokens × experts × hidden] intermediate is built.

Decode-sized batches of small experts on CPU (a few tokens: one step of generation) skip the
sort and the gathers: each expert that some token selected runs on every token, and the tokens
that did not select it give its output weight 0. A decode step reads each used expert's weights
once either way, and a trained router's tokens share few experts (the small pretrained model's
two guided rows use 1.8 of 6 per layer on average), so idle experts are never read. When most
experts are busy (untrained routers), every expert runs in three batched matmuls instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


# Limits of the used-experts path, measured on a 2-core CPU (benchmarks/moe_layer.py decode rows,
# benchmarks/generate.py): up to 16 tokens and experts of at most 2^18 weights per matrix.
DECODE_TOKENS, SMALL_EXPERT = 16, 1 << 18
SMALL_SCATTER = 1 << 14  # elements; measured on a 2-core CPU: serial index_put_ wins below, index_add_ above


def swiglu(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    """x [n, D] through one expert: w_gate, w_up [F, D], w_down [D, F] -> [n, D]."""
    return F.linear(F.silu(F.linear(x, w_gate)) * F.linear(x, w_up), w_down)


def dispatch(x: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor,
             w_down: torch.Tensor) -> torch.Tensor:
    """Weighted sum of the selected routed experts per token.

    x [N, D]; mask [N, E] bool selection and weights [N, E] (E = routed experts only);
    stacked expert weights w_gate, w_up [E, F, D], w_down [E, D, F]. Returns [N, D].
    """
    if x.device.type == "cpu" and x.shape[0] <= DECODE_TOKENS and w_gate[0].numel() <= SMALL_EXPERT:
        used = mask.any(0).nonzero().flatten().tolist()
        if 2 * len(used) > w_gate.shape[0]:  # most experts busy: three batched matmuls beat a loop over them
            return all_experts(x, mask, weights, w_gate, w_up, w_down)
        return used_experts(x, mask, weights, w_gate, w_up, w_down, used)
    # mask.T.nonzero() lists pairs ordered by expert, then token: each expert's tokens are contiguous.
    expert_idx, token_idx = mask.T.nonzero(as_tuple=True)
    counts = torch.bincount(expert_idx, minlength=w_gate.shape[0]).tolist()
    rows = x.index_select(0, token_idx)  # [P, D]
    pair_weight = weights[token_idx, expert_idx].to(x.dtype)[:, None]  # [P, 1]
    # unbind once: its backward stacks the per-expert gradients in one write, where indexing
    # w[e] per expert would materialise a full-size zero gradient for every expert.
    gates, ups, downs = w_gate.unbind(0), w_up.unbind(0), w_down.unbind(0)
    outputs, start = [], 0
    for e, count in enumerate(counts):
        if count:
            outputs.append(swiglu(rows[start:start + count], gates[e], ups[e], downs[e]))
            start += count
    out = torch.zeros_like(x)
    if not outputs:
        return out
    y = torch.cat(outputs) * pair_weight  # [P, D]
    if y.numel() <= SMALL_SCATTER:  # decode-sized: the serial kernel avoids a thread-pool round trip
        return out.index_put_((token_idx,), y, accumulate=True)
    return out.index_add_(0, token_idx, y)


def used_experts(x: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor, w_gate: torch.Tensor,
                 w_up: torch.Tensor, w_down: torch.Tensor, used: list[int]) -> torch.Tensor:
    """The same sum as `dispatch`, running each expert in `used` (those some token selected) on every token."""
    out = torch.zeros_like(x)
    weights = (weights * mask).to(x.dtype)  # [N, E], 0 where a token did not select the expert
    for e in used:
        out.addcmul_(swiglu(x, w_gate[e], w_up[e], w_down[e]), weights[:, e:e + 1])
    return out


def all_experts(x: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor,
                w_down: torch.Tensor) -> torch.Tensor:
    """The same sum as `dispatch`, computing every expert on every token ([E, N, D] intermediates)."""
    xe = x.expand(w_gate.shape[0], -1, -1)  # [E, N, D]
    h = F.silu(torch.bmm(xe, w_gate.transpose(1, 2))) * torch.bmm(xe, w_up.transpose(1, 2))
    y = torch.bmm(h, w_down.transpose(1, 2))  # [E, N, D]
    return (y * (weights * mask).to(x.dtype).T[:, :, None]).sum(0)
