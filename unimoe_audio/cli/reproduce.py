"""`unimoe-audio reproduce`: recipe + baselines + evaluation -> a results report."""

from __future__ import annotations

from pathlib import Path

from unimoe_audio.workflows.reproduce import reproduce


def register(subparsers) -> None:
    p = subparsers.add_parser("reproduce", help="run a recipe with its baselines, evaluate all, write docs/results.md")
    p.add_argument("--config", type=Path, default=Path("configs/curriculum-small.yaml"))
    p.add_argument("--report", type=Path, default=Path("docs/results.md"))
    p.add_argument("--per-task", type=int, default=8, help="test items per task and group")
    p.set_defaults(func=run)


def run(args) -> int:
    report = reproduce(args.config, args.report, args.per_task)
    print(report.read_text(), end="")
    print(f"report written to {report}")
    return 0
