"""Memory per device of the paper-shape model: inference, LoRA and full fine-tuning under DDP,
FSDP and expert parallelism on 1, 2, 4 and 8 devices. Computed, not measured.

Parameters are counted on the meta device (`UniMoEAudioModel.empty`, no memory used); the LoRA
adapters are peft's, built by `apply_lora` on that empty model. Bytes per parameter:

- inference: 2 (bf16) or 4 (fp32) per weight;
- full fine-tuning: 16 = bf16 weight 2 + bf16 gradient 2 + fp32 master weight 4 + AdamW m and v 8
  (FSDP2's mixed precision keeps fp32 shards and fp32 gradients instead: also 16);
- LoRA: the frozen model in bf16 (2) + 16 per adapter parameter.

DDP replicates everything. FSDP divides everything by the device count and adds what is gathered
at a time: two blocks' weights in bf16 (the one computing and the next, prefetched) and, when
training, one block's bf16 gradients. Expert parallelism (EP) splits the 8 routed experts of every
layer over the devices (EP group = all of them) and replicates the rest as DDP does. Activations,
the KV cache, the codec and the framework's own buffers come on top.
"""

from __future__ import annotations

import argparse

from unimoe_audio.model import UniMoEAudioConfig, UniMoEAudioModel
from unimoe_audio.model.transformer import Block
from unimoe_audio.train.finetune import LoRASettings, apply_lora

RELEASED_TEXT_VOCAB = 151_936  # the released checkpoint's tokenizer (Qwen2.5-VL)
DEVICES = (1, 2, 4, 8)
GB = 1e9


def counts(config: UniMoEAudioConfig, lora_rank: int) -> dict[str, int]:
    """Parameters: all, routed experts, the largest block, LoRA adapters (all, on routed experts)."""
    model = UniMoEAudioModel.empty(config)
    total = sum(p.numel() for p in model.parameters())
    routed = sum(p.numel() for n, p in model.named_parameters() if ".experts.w_" in n)
    block = max(sum(p.numel() for p in m.parameters()) for m in model.modules() if isinstance(m, Block))
    adapters = [(n, p.numel()) for n, p in apply_lora(model, LoRASettings(rank=lora_rank)).named_parameters()
                if p.requires_grad]
    return {"total": total, "routed": routed, "block": block, "lora": sum(k for _, k in adapters),
            "lora_routed": sum(k for n, k in adapters if ".experts." in n)}


def per_device(c: dict[str, int], mode: str, layout: str, n: int) -> float:
    """Bytes per device for `mode` (inference-bf16, inference-fp32, lora, full) under `layout` on n devices."""
    weight = {"inference-bf16": 2, "inference-fp32": 4, "lora": 2, "full": 16}[mode]
    lora, lora_routed = (c["lora"], c["lora_routed"]) if mode == "lora" else (0, 0)
    if layout == "ddp":
        return weight * c["total"] + 16 * lora
    if layout == "ep":
        rest, experts = c["total"] - c["routed"], c["routed"]
        return weight * (rest + experts / n) + 16 * (lora - lora_routed + lora_routed / n)
    compute = 4 if mode == "inference-fp32" else 2
    gathered = 2 * compute * c["block"] + (2 * c["block"] if mode == "full" else 0)
    return (weight * c["total"] + 16 * lora) / n + (gathered if n > 1 else 0)


def table(c: dict[str, int]) -> str:
    rows = ["| what | layout | " + " | ".join(f"{n} device{'s' if n > 1 else ''}" for n in DEVICES) + " |",
            "|---|---|" + "---|" * len(DEVICES)]
    names = {"inference-bf16": "inference, bf16", "inference-fp32": "inference, fp32",
             "lora": "LoRA rank 8, all targets", "full": "full fine-tuning (AdamW)"}
    for mode, label in names.items():
        for layout in ("ddp", "fsdp", "ep"):
            cells = [f"{per_device(c, mode, layout, n) / GB:.1f}" for n in DEVICES]
            rows.append(f"| {label} | {layout.upper()} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lora-rank", type=int, default=8)
    args = parser.parse_args()
    config = UniMoEAudioConfig.preset("paper", text_vocab_size=RELEASED_TEXT_VOCAB, ffn="moe")
    c = counts(config, args.lora_rank)
    print(f"parameters {c['total'] / 1e9:.2f} B (routed experts {c['routed'] / 1e9:.2f} B, largest block "
          f"{c['block'] / 1e6:.0f} M); LoRA rank {args.lora_rank}: {c['lora'] / 1e6:.1f} M "
          f"({c['lora_routed'] / 1e6:.1f} M on routed experts)")
    print("GB (1e9 bytes) per device, weights + gradients + optimizer states, activations excluded:\n")
    print(table(c))


if __name__ == "__main__":
    main()
