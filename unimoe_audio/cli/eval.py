"""`unimoe-audio eval` and `unimoe-audio analyze-routing`."""

from __future__ import annotations

from pathlib import Path

from unimoe_audio.eval.routing import analyze_routing
from unimoe_audio.eval.suite import evaluate


def register(subparsers) -> None:
    e = subparsers.add_parser("eval", help="generate a split with a model and score it beside the ground truth")
    e.add_argument("--model", type=Path, required=True)
    e.add_argument("--split", default="test", choices=("train", "validation", "test"))
    e.add_argument("--corpus", type=Path, help="corpus directory (default: the one the model was trained on)")
    e.add_argument("--out", type=Path, help="output directory (default: <model>/../eval-<split>)")
    e.add_argument("--per-task", type=int, help="evaluate at most this many items per task and group")
    e.add_argument("--max-music-seconds", type=float, default=10.0)
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=run_eval)

    r = subparsers.add_parser("analyze-routing", help="plot how the MoE routes speech and music tokens")
    r.add_argument("--model", type=Path, required=True)
    r.add_argument("--split", default="validation", choices=("train", "validation", "test"))
    r.add_argument("--corpus", type=Path)
    r.add_argument("--out", type=Path, help="output directory (default: <model>/../routing)")
    r.set_defaults(func=run_routing)


def run_eval(args) -> int:
    report = evaluate(args.model, args.split, args.corpus, args.out, args.per_task, args.seed, args.max_music_seconds)
    print((Path(report["output"]) / "results.md").read_text(), end="")
    print(f"results: {report['output']}/results.json, results.md; generated audio in {report['output']}/audio/")
    return 0


def run_routing(args) -> int:
    result = analyze_routing(args.model, args.split, args.corpus, args.out)
    for layer, tasks in result["layers"].items():
        summary = ", ".join(f"{t} {v['mean_experts']:.2f} experts/token (null {v['null_rate']:.2f})" for t, v in tasks.items())
        print(f"layer {layer}: {summary}")
    print(f"routing plots and numbers: {result['output']}/routing.png, routing.json")
    return 0
