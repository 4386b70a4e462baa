"""Memory one process needs to train a model, computed (not measured), and the start-up check.

Parameters: a frozen one costs its weight; a trainable one its weight, its gradient and AdamW's m
and v, all four in its dtype (`torch.optim.AdamW` keeps its states in the parameter's dtype), so
16 bytes in fp32. Layouts (`per_process`): DDP replicates everything; FSDP divides everything by
the process count and adds what is gathered at a time (two blocks' weights in the compute dtype,
the one computing and the next, prefetched; and when every weight trains, one block's gradients);
expert parallelism (EP) divides the routed experts by the process count and replicates the rest.

Activations are an estimate, not a measurement: per layer, 17 values per position per hidden unit
kept for backward (Korthikanti et al. 2022, "Reducing activation recomputation", 34·s·b·h bytes in
16 bit, attention scores excluded as SDPA does not keep them), or the layer's input alone with
activation checkpointing (plus one layer recomputed at a time); plus the output logits and their
gradient in fp32. The KV cache, the codec and the framework's own buffers come on top.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from unimoe_audio.errors import UniMoEError
from unimoe_audio.model.transformer import Block

GB = 1e9
UPDATE_COPIES = 4  # a trainable parameter: weight, gradient, AdamW m and v
ACTIVATION_VALUES = 17  # values kept per position, hidden unit and layer for backward (see the docstring)


@dataclass(frozen=True)
class ParameterBytes:
    """Bytes of a model's parameter states, split where the layouts treat them differently."""

    dense: float  # everything but the routed experts
    routed: float  # the routed experts (what expert parallelism splits)
    block: int  # parameters of the largest transformer block (what FSDP gathers at a time)


def parameter_bytes(model: nn.Module, frozen: float | None = None, trainable: float | None = None) -> ParameterBytes:
    """Bytes per parameter: `frozen` / `trainable` if given, else from each parameter's dtype
    (weight alone when frozen; weight, gradient and AdamW states when trainable)."""
    dense = routed = 0.0
    for name, p in model.named_parameters():
        if p.requires_grad:
            size = trainable if trainable is not None else UPDATE_COPIES * p.element_size()
        else:
            size = frozen if frozen is not None else p.element_size()
        if ".experts." in name:
            routed += size * p.numel()
        else:
            dense += size * p.numel()
    block = max((sum(p.numel() for p in m.parameters()) for m in model.modules() if isinstance(m, Block)), default=0)
    return ParameterBytes(dense, routed, block)


def per_process(p: ParameterBytes, layout: str, n: int, compute_bytes: int, full_training: bool) -> float:
    """Bytes of parameter states one of `n` processes holds under `layout` (ddp, fsdp, ep)."""
    if layout == "ddp" or n == 1:
        return p.dense + p.routed
    if layout == "ep":
        return p.dense + p.routed / n
    gathered = 2 * compute_bytes * p.block + (compute_bytes * p.block if full_training else 0)
    return (p.dense + p.routed) / n + gathered


def activation_bytes(config, micro_batch: int, length: int, compute_bytes: int, checkpointing: bool) -> float:
    """Estimated activations of one micro-batch of `length` positions (see the module docstring)."""
    per_layer = micro_batch * length * config.hidden_size * compute_bytes
    kept = per_layer * (config.num_layers + ACTIVATION_VALUES if checkpointing else ACTIVATION_VALUES * config.num_layers)
    logits = 2 * 4 * micro_batch * length * config.num_codebooks * config.audio_vocab_size
    return kept + logits


def available_bytes(device: torch.device, processes: int) -> float | None:
    """Memory one process may use: the GPU's free memory, or on CPU the host's MemAvailable shared
    by the `processes` on this host. None where it cannot be read (then nothing is checked)."""
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None
    return kib * 1024 / processes


def check_training_memory(model: nn.Module, micro_batch: int, length: int, device: torch.device, world: int,
                          fsdp: bool, checkpointing: bool) -> None:
    """Refuse (UniMoEError) a run whose estimated memory per process exceeds what its device has.

    Called before the model moves to the device; parameters already there count as available."""
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", world)) if device.type == "cpu" else 1
    available = available_bytes(device, processes)
    if available is None:
        return
    available += sum(p.numel() * p.element_size() for p in model.parameters() if p.device == device)
    compute = 2 if device.type == "cuda" else 4  # bf16 autocast on GPU
    full = all(p.requires_grad for p in model.parameters())
    states = per_process(parameter_bytes(model), "fsdp" if fsdp else "ddp", world, compute, full)
    config = getattr(model, "config", None)
    activations = (activation_bytes(config, micro_batch, length, compute, fsdp and checkpointing)
                   if config is not None else 0.0)
    if states + activations <= available:
        return
    advice = ["a smaller batch_size", "a larger grad_accum"]
    if not fsdp:
        advice.append("parallel: fsdp over several processes (torchrun)")
    elif not checkpointing:
        advice.append("activation_checkpointing: true")
    if full:
        advice.append("LoRA (unimoe-audio finetune --lora)")
    where = f"{device}" + (f" (host memory shared by {processes} processes)" if processes > 1 else "")
    raise UniMoEError(
        f"training needs about {_size(states + activations)} per process but {where} has {_size(available)} "
        f"available: weights, gradients and AdamW states {_size(states)}"
        f"{f' (sharded over {world} processes)' if fsdp and world > 1 else ''}, activations {_size(activations)} "
        f"(an estimate for micro-batches of {micro_batch} × {length} positions"
        f"{f' × hidden {config.hidden_size} × {config.num_layers} layers' if config is not None else ''}). "
        f"Use {', '.join(advice[:-1])} or {advice[-1]}")


def _size(n: float) -> str:
    return f"{n / GB:.2f} GB" if n >= 0.1 * GB else f"{n / 1e6:.1f} MB"
