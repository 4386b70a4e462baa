"""Stage 2 of the curriculum: build the DCMoE model from dense specialists (REFERENCE.md §1, §6).

Each specialist's FFN is cut into contiguous slices of its intermediate dimension; every slice is
one routed expert, so N_routed = n_specialists × slices and the split is exact (all slices of one
FFN, each with weight 1, sum to that FFN). Attention, norms, embeddings and the head are the
average of the specialists; gates and shared experts keep their fresh initialisation. During the
warm-up only gates and shared experts train (`freeze_for_warmup`).
"""

from __future__ import annotations

import torch
from torch import nn

from unimoe_audio.errors import UniMoEError
from unimoe_audio.moe import DCMoE, SwiGLU


def split_ffn(ffn: SwiGLU, slices: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A dense SwiGLU of width F -> `slices` experts of width F / slices.

    Returns w_gate [S, F/S, D], w_up [S, F/S, D], w_down [S, D, F/S]: expert j owns gate/up rows
    and down columns [j·w, (j+1)·w).
    """
    width = ffn.gate_proj.out_features
    if width % slices:
        raise UniMoEError(f"cannot split an FFN of width {width} into {slices} equal experts; "
                          f"choose moe.slices_per_specialist dividing the specialist's intermediate size")
    d, w = ffn.gate_proj.in_features, width // slices
    w_gate = ffn.gate_proj.weight.detach().reshape(slices, w, d)
    w_up = ffn.up_proj.weight.detach().reshape(slices, w, d)
    w_down = ffn.down_proj.weight.detach().reshape(d, slices, w).permute(1, 0, 2)
    return w_gate, w_up, w_down


@torch.no_grad()
def load_experts(moe: DCMoE, ffns: list[SwiGLU]) -> None:
    """Fill `moe`'s routed experts with the slices of `ffns`, specialist after specialist."""
    slices, rem = divmod(moe.experts.num_experts, len(ffns))
    if rem:
        raise UniMoEError(f"{moe.experts.num_experts} routed experts cannot be shared evenly by {len(ffns)} specialists")
    parts = [split_ffn(ffn, slices) for ffn in ffns]
    for name, i in (("w_gate", 0), ("w_up", 1), ("w_down", 2)):
        stacked = torch.cat([p[i] for p in parts])  # [E, ...]
        target = getattr(moe.experts, name)
        if stacked.shape != target.shape:
            raise UniMoEError(f"specialist FFN slices have shape {list(stacked.shape)} but the MoE's "
                              f"{name} is {list(target.shape)}; the MoE's routed_size must be "
                              f"intermediate_size / slices_per_specialist")
        target.copy_(stacked)


def _ffn_prefixes(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, (SwiGLU, DCMoE)) and name.endswith("ffn")]


@torch.no_grad()
def upcycle(specialists: list[nn.Module], moe_model: nn.Module, owners: dict[str, int] | None = None) -> nn.Module:
    """Initialise `moe_model` (same layout, DCMoE FFNs) from dense `specialists`, in place.

    Every non-FFN parameter and buffer is the mean over specialists, except those under a prefix
    of `owners`, which come from that one specialist (the vision encoder: only the v2m specialist
    trained it); every DCMoE gets its routed experts from the specialists' FFN slices at the same
    layer; gates and shared experts are untouched.
    """
    if not specialists:
        raise UniMoEError("upcycling needs at least one specialist")
    ffn_names = _ffn_prefixes(moe_model)
    states = [s.state_dict() for s in specialists]
    for name, tensor in moe_model.state_dict().items():
        if any(name.startswith(prefix + ".") for prefix in ffn_names):
            continue
        owner = next((i for prefix, i in (owners or {}).items() if name.startswith(prefix)), None)
        sources = [st.get(name) for st in (states if owner is None else states[owner: owner + 1])]
        if any(s is None or s.shape != tensor.shape for s in sources):
            raise UniMoEError(f"specialists do not match the MoE model at {name!r}: all specialists must share "
                              f"the MoE's dense configuration (hidden size, layers, vocabulary)")
        if tensor.is_floating_point():
            tensor.copy_(torch.stack([s.to(tensor.dtype) for s in sources]).mean(dim=0))
        else:
            tensor.copy_(sources[0])
    modules = [dict(s.named_modules()) for s in specialists]
    for prefix in ffn_names:
        moe = moe_model.get_submodule(prefix)
        if not isinstance(moe, DCMoE):
            raise UniMoEError(f"{prefix} of the target model is not a DCMoE; upcycling builds an MoE model")
        ffns = [m.get(prefix) for m in modules]
        if not all(isinstance(f, SwiGLU) for f in ffns):
            raise UniMoEError(f"every specialist must have a dense SwiGLU at {prefix}")
        load_experts(moe, ffns)
    return moe_model


def warmup_parameters(model: nn.Module) -> list[str]:
    """Names of the parameters stage 2 trains: every DCMoE's gate and shared experts."""
    names = []
    for prefix, module in model.named_modules():
        if isinstance(module, DCMoE):
            names += [f"{prefix}.{n}" for n, _ in module.named_parameters() if not n.startswith("experts.")]
    return names


def freeze_for_warmup(model: nn.Module) -> list[str]:
    """Leave only gates and shared experts trainable (stage 2); returns their names."""
    keep = set(warmup_parameters(model))
    if not keep:
        raise UniMoEError("the model has no DCMoE layers, so there is nothing to warm up")
    for name, p in model.named_parameters():
        p.requires_grad_(name in keep)
    return sorted(keep)


def unfreeze(model: nn.Module) -> None:
    """Stage 3: everything trains."""
    for p in model.parameters():
        p.requires_grad_(True)
