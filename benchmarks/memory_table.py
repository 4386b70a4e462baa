"""Memory per device of the paper-shape model: inference, LoRA and full fine-tuning under DDP,
FSDP and expert parallelism on 1, 2, 4 and 8 devices. Computed, not measured.

Parameters are counted on the meta device (`UniMoEAudioModel.empty`, no memory used); the LoRA
adapters are peft's, built by `apply_lora` on that empty model. The arithmetic is
`unimoe_audio.train.memory`'s, the one the trainer's start-up check uses. Bytes per parameter:

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
from unimoe_audio.train.finetune import LoRASettings, apply_lora
from unimoe_audio.train.memory import GB, ParameterBytes, parameter_bytes, per_process

RELEASED_TEXT_VOCAB = 151_936  # the released checkpoint's tokenizer (Qwen2.5-VL)
DEVICES = (1, 2, 4, 8)
MODES = {"inference-bf16": "inference, bf16", "inference-fp32": "inference, fp32",
         "lora": "LoRA rank 8, all targets", "full": "full fine-tuning (AdamW)"}


def mode_bytes(config: UniMoEAudioConfig, lora_rank: int) -> dict[str, ParameterBytes]:
    """Parameter bytes of each mode (the bytes per parameter of the module docstring), and the
    counts: `parameters` (all) and `adapters` (LoRA's) at one "byte" each."""
    model = UniMoEAudioModel.empty(config)
    out = {"inference-bf16": parameter_bytes(model, 2, 2), "inference-fp32": parameter_bytes(model, 4, 4),
           "full": parameter_bytes(model, 16, 16), "parameters": parameter_bytes(model, 1, 1)}
    lora = apply_lora(model, LoRASettings(rank=lora_rank))
    return {**out, "lora": parameter_bytes(lora, frozen=2, trainable=16), "adapters": parameter_bytes(lora, 0, 1)}


def per_device(b: ParameterBytes, mode: str, layout: str, n: int) -> float:
    """Bytes per device for `mode` under `layout` (ddp, fsdp, ep) on n devices."""
    return per_process(b, layout, n, compute_bytes=4 if mode == "inference-fp32" else 2, full_training=mode == "full")


def table(modes: dict[str, ParameterBytes]) -> str:
    rows = ["| what | layout | " + " | ".join(f"{n} device{'s' if n > 1 else ''}" for n in DEVICES) + " |",
            "|---|---|" + "---|" * len(DEVICES)]
    for mode, label in MODES.items():
        for layout in ("ddp", "fsdp", "ep"):
            cells = [f"{per_device(modes[mode], mode, layout, n) / GB:.1f}" for n in DEVICES]
            rows.append(f"| {label} | {layout.upper()} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lora-rank", type=int, default=8)
    args = parser.parse_args()
    config = UniMoEAudioConfig.preset("paper", text_vocab_size=RELEASED_TEXT_VOCAB, ffn="moe")
    modes = mode_bytes(config, args.lora_rank)
    p, a = modes["parameters"], modes["adapters"]
    print(f"parameters {(p.dense + p.routed) / 1e9:.2f} B (routed experts {p.routed / 1e9:.2f} B, largest block "
          f"{p.block / 1e6:.0f} M); LoRA rank {args.lora_rank}: {(a.dense + a.routed) / 1e6:.1f} M "
          f"({a.routed / 1e6:.1f} M on routed experts)")
    print("GB (1e9 bytes) per device, weights + gradients + optimizer states, activations excluded:\n")
    print(table(modes))


if __name__ == "__main__":
    main()
