"""`unimoe-audio finetune --model DIR --corpus CORPUS --out DIR2 [--lora ...]`: adapt a released checkpoint."""

from __future__ import annotations

import dataclasses

import yaml

from unimoe_audio.errors import UniMoEError
from unimoe_audio.train.config import StageConfig, stage_from_dict
from unimoe_audio.train.distributed import setup, teardown
from unimoe_audio.train.finetune import LORA_TARGETS, FinetuneConfig, LoRASettings, finetune


def register(subparsers) -> None:
    p = subparsers.add_parser("finetune", help="fine-tune a released-format checkpoint on a corpus (full or LoRA)",
                              description="Uses the checkpoint's tokenizer, prompts and DAC codec (the corpus is encoded "
                                          "with it if it has no tokens yet). Runs under torchrun unchanged (DDP; FSDP with "
                                          "--set parallel=fsdp, expert parallelism with --set parallel=ep); "
                                          "re-running the same command resumes.")
    p.add_argument("--model", required=True, help="released (or converted) checkpoint folder")
    p.add_argument("--corpus", required=True, help="corpus folder (train.jsonl, validation.jsonl, audio/)")
    p.add_argument("--out", required=True, help="run folder; the fine-tuned model goes to OUT/model")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters instead of every weight")
    p.add_argument("--lora-targets", default="attention,routed,shared,gates",
                   help=f"comma-separated, from {','.join(LORA_TARGETS)}")
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument("--steps", type=int)
    p.add_argument("--lr", type=float, help="peak LR (default 1e-5 full, 1e-4 LoRA)")
    p.add_argument("--batch-size", type=int, help="global batch (default 8)")
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other training setting (StageConfig field), e.g. --set aux_steps=2000 --set eval_every=50")
    p.add_argument("--cond-dropout", type=float, default=0.1, help="share of unconditional rows (guidance)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda when available, else cpu)")
    p.set_defaults(func=run)


def stage_settings(args) -> StageConfig:
    base = dataclasses.asdict(FinetuneConfig("", "", "").stage)
    if args.lora:
        base["lr"] = 1e-4
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise UniMoEError(f"--set {item!r}: write KEY=VALUE")
        base[key.strip()] = yaml.safe_load(value)
    flags = {"steps": args.steps, "lr": args.lr, "batch_size": args.batch_size, "grad_accum": args.grad_accum}
    base.update({k: v for k, v in flags.items() if v is not None})
    return stage_from_dict(base, "finetune")


def run(args) -> int:
    lora = LoRASettings(tuple(t.strip() for t in args.lora_targets.split(",") if t.strip()), args.lora_rank,
                        args.lora_alpha) if args.lora else None
    config = FinetuneConfig(model=args.model, corpus=args.corpus, out=args.out, lora=lora, stage=stage_settings(args),
                            cond_dropout=args.cond_dropout, seed=args.seed)
    dist = setup(args.device)
    try:
        final = finetune(config, dist)
    finally:
        teardown()
    if dist.is_main:
        print(f"fine-tuned model: {final}")
    return 0
