"""Routing rules: pure functions of gate logits (paper §III-B, eqs. 2–3; REFERENCE.md §3).

All functions take `logits [N, E]` over the dynamic experts (routed + null) and return a bool
selection `mask [N, E]` and combination `weights [N, E]` (0 where unselected). Nothing here
loops over rows or over k: selection is a sort, a cumulative sum and a scatter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _sorted_probs(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax in fp32, sorted descending; ties keep the lower expert index first."""
    probs = torch.softmax(logits.float(), dim=-1)  # [N, E]
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    return probs, sorted_probs, order


def _mask_from_sorted(keep_sorted: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def _renormalise(probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 3: w_i = p_i / sum_{j in I} p_j on the selected set, 0 elsewhere."""
    selected = probs * mask
    return selected / selected.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(probs.dtype).tiny)


def top_p_routing(logits: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 2: per row, the smallest set of experts whose softmax mass reaches `top_p`.

    Sorted position j is kept when the mass of the positions before it is still below `top_p`,
    so the first expert is always kept and the set is minimal.
    """
    probs, sorted_probs, order = _sorted_probs(logits)
    # the running sum shifted by one (not cumsum - p, whose rounding can differ at the threshold)
    mass_before = F.pad(torch.cumsum(sorted_probs, dim=-1)[:, :-1], (1, 0))  # [N, E]
    mask = _mask_from_sorted(mass_before < top_p, order)
    return mask, _renormalise(probs, mask)


def top_k_routing(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed-K baseline: the k most probable experts, weighted as in eq. 3."""
    probs, _, order = _sorted_probs(logits)
    rank = torch.arange(logits.shape[-1], device=logits.device).expand_as(order)
    mask = _mask_from_sorted(rank < k, order)
    return mask, _renormalise(probs, mask)


def official_weights(
    dynamic_logits: torch.Tensor, shared_logits: torch.Tensor, mask: torch.Tensor, gap: float = 0.02
) -> tuple[torch.Tensor, torch.Tensor]:
    """The released checkpoint's combination rule (REFERENCE.md §3, steps 2–3).

    dynamic_logits [N, E] (routed + null), shared_logits [N, S], mask [N, E] the selection.
    Returns (dynamic weights [N, E], shared weights [N, S]). The null expert's weight is kept
    in the dynamic weights; its output is zero, so its share is dropped as in the released code.
    """
    z = dynamic_logits.float()
    z_sorted, order = torch.sort(z, dim=-1, descending=True, stable=True)  # [N, E]
    n, e = z.shape
    # Step 2: expert at sorted position i competes with later (not-yet-selected) positions whose
    # logit is within a relative gap of it.
    m = z_sorted[:, :, None]  # [N, E, 1]
    other = z_sorted[:, None, :]  # [N, 1, E]
    rel_gap = (m - other) / torch.maximum(m.abs(), other.abs()).clamp_min(1e-12)
    later = torch.arange(e, device=z.device)[None, :] >= torch.arange(e, device=z.device)[:, None]
    competing = later & (rel_gap <= gap)  # [N, E, E]
    competitors = torch.where(competing, other, torch.full_like(other.expand_as(competing), -torch.inf))
    r_sorted = torch.exp(z_sorted - torch.logsumexp(competitors, dim=-1))  # [N, E]
    r = torch.zeros_like(z).scatter(-1, order, r_sorted) * mask
    r = r / (r.sum(dim=-1, keepdim=True) + 1e-6)  # the released normalisation, epsilon included
    # Step 3: softmax over {selected} ∪ {shared}.
    joint = torch.cat([z.masked_fill(~mask, -torch.inf), shared_logits.float()], dim=-1)
    g = torch.softmax(joint, dim=-1)
    g_dynamic, g_shared = g[:, :e], g[:, e:]
    return r * g_dynamic.sum(dim=-1, keepdim=True), g_shared
