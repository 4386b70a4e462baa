"""`unimoe-audio eval` and `unimoe-audio analyze-routing`."""

from __future__ import annotations

from pathlib import Path

from unimoe_audio.errors import UniMoEError

from unimoe_audio.workflows.checkpoints import judge_checkpoints, judged_paths
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

    c = subparsers.add_parser("eval-checkpoints", help="the judges' scores across training: every kept checkpoint of a stage")
    c.add_argument("--stage-dir", type=Path, required=True, help="a stage of a run, e.g. runs/pretrained/backbone")
    c.add_argument("--split", default="validation", choices=("train", "validation", "test"))
    c.add_argument("--per-task", type=int, default=4, help="items per task and group (the same ones at every step)")
    c.add_argument("--every", type=int, default=1, help="judge every N-th kept checkpoint (the newest always)")
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(func=run_checkpoints)

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


def run_checkpoints(args) -> int:
    if args.per_task < 1 or args.every < 1:
        raise UniMoEError("--per-task and --every must be positive")
    rows = judge_checkpoints(args.stage_dir, args.split, args.per_task, args.every, args.seed)
    for row in rows:
        print("  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items() if v is not None))
    log, png = judged_paths(args.stage_dir, args.split)
    print(f"scores: {log}, {png}; models: {args.stage_dir}/exports/")
    return 0


def run_routing(args) -> int:
    result = analyze_routing(args.model, args.split, args.corpus, args.out)
    for layer, tasks in result["layers"].items():
        summary = ", ".join(f"{t} {v['mean_experts']:.2f} experts/token (null {v['null_rate']:.2f})" for t, v in tasks.items())
        print(f"layer {layer}: {summary}")
    print(f"routing plots and numbers: {result['output']}/routing.png, routing.json")
    return 0
