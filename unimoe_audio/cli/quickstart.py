"""`unimoe-audio quickstart`: the whole system on built-in defaults (workflows/quickstart.py)."""

from __future__ import annotations

import time
from pathlib import Path

from unimoe_audio.workflows.quickstart import RECIPE, quickstart


def register(subparsers) -> None:
    p = subparsers.add_parser("quickstart", help="tiny corpus -> tiny curriculum -> speech and music clips -> report")
    p.add_argument("--config", type=Path, default=RECIPE, help="recipe (default: configs/curriculum-tiny.yaml)")
    p.add_argument("--seed", type=int, default=0, help="generation seed")
    p.set_defaults(func=run)


def run(args) -> int:
    start = time.perf_counter()
    done = quickstart(args.config, args.seed)
    out, report = Path(done["recipe"].out), done["report"]
    print(f"\nquickstart finished in {(time.perf_counter() - start) / 60:.1f} min")
    print(f"  corpus          {done['recipe'].corpus.path}/ (report.md; tokens/)")
    print(f"  models          {out}/specialists/*/model, {out}/warmup/model, {out}/joint/model")
    print(f"  training        {out}/summary.json, {out}/curriculum-loss.png, {out}/*/tensorboard")
    for name, path in done["clips"].items():
        print(f"  {name:<15} {path}")
    print(f"  spectrograms    {out}/samples/samples.png")
    print(f"  evaluation      {report}/results.md")
    print(f"  routing         {done['routing']}/routing.png")
    print()
    print((report / "results.md").read_text(), end="")
    return 0
