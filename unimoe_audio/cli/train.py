"""`unimoe-audio train --config RECIPE.yaml`: the curriculum (and baselines) from a recipe file."""

from __future__ import annotations

import json
from pathlib import Path

from unimoe_audio.train.config import load_recipe
from unimoe_audio.train.curriculum import RUNNABLE, run_recipe
from unimoe_audio.train.distributed import setup, teardown


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="run a training recipe: specialists -> warm-up -> joint, and baselines",
                              description="Runs under torchrun / accelerate launch unchanged (DDP; FSDP with a stage's `parallel: fsdp`, "
                                          "expert parallelism with `parallel: ep`; "
                                          "gloo on CPU, NCCL on GPU). "
                                          "Re-running the same recipe resumes where it stopped.")
    p.add_argument("--config", type=Path, required=True, help="recipe YAML (see configs/)")
    p.add_argument("--stage", default="all", choices=("all", *RUNNABLE),
                   help="run only this stage (earlier stages are trained first if missing) or baseline(s)")
    p.add_argument("--out", help="run directory (overrides the recipe's `out`)")
    p.add_argument("--corpus", help="corpus directory (overrides the recipe's corpus.path)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda when available, else cpu)")
    p.set_defaults(func=run)


def run(args) -> int:
    recipe = load_recipe(args.config)
    if args.out:
        recipe.out = args.out
    if args.corpus:
        recipe.corpus.path = args.corpus
    dist = setup(args.device)
    try:
        summary = run_recipe(recipe, args.stage, dist)
    finally:
        teardown()
    if dist.is_main:
        print(json.dumps(summary, indent=2))
        print(f"run directory: {recipe.out}")
    return 0
