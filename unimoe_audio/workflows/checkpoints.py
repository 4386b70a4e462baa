"""`unimoe-audio eval-checkpoints`: the judges' scores across training.

Validation loss says how well a model predicts codes; only the judges say whether it speaks.
Every kept checkpoint of a stage (`<run>/<stage>/checkpoints/step-N.pt`, or FSDP's shards
`step-N.dcp/`, read in this one process) is exported as a model directory
(`<stage>/exports/step-N/`) and evaluated on the same few validation items of the stage's task
groups with `evaluate` (Whisper-base WER/CER, speaker similarity, music adherence), and its speech
teacher-forced on as many items of the same split (`eval/teacher_forced.py`: the sentences said
from the recording's true past, which tells not knowing a sentence's sound from drifting on its
own output); the scores go to `<stage>/judged.jsonl` and `<stage>/judged.png` (another split's
to `judged-<split>.jsonl` and `.png`). Finished checkpoints are not judged again, so the command
can run while training goes on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from tqdm import tqdm

from unimoe_audio.codec import load_codec
from unimoe_audio.data import TokenDataset
from unimoe_audio.errors import UniMoEError
from unimoe_audio.eval.judges import WhisperJudge
from unimoe_audio.eval.suite import evaluate
from unimoe_audio.eval.teacher_forced import teacher_forced_scores
from unimoe_audio.io import atomic_path, save_figure, write_json
from unimoe_audio.model import TextFrontend, UniMoEAudio, UniMoEAudioConfig, UniMoEAudioModel, save_model
from unimoe_audio.train import sharding
from unimoe_audio.train.config import recipe_from_dict
from unimoe_audio.train.trainer import list_checkpoints, read_metrics

# Scores drawn per step: (results.json path, label).
SCORES = ((("speech-en", "wer_whisper"), "English WER"), (("speech-zh", "cer_whisper"), "Mandarin CER"),
          (("clone", "similarity"), "clone similarity"), (("music", "generated", "tempo_accuracy"), "tempo accuracy"),
          (("music", "generated", "key_accuracy"), "key accuracy"))
TEACHER_FORCED = ((("speech-en", "wer_whisper"), "English WER (teacher-forced)"),
                  (("speech-zh", "cer_whisper"), "Mandarin CER (teacher-forced)"))


def _run_dir(stage_dir: Path) -> Path:
    for parent in (stage_dir, *stage_dir.parents):
        if (parent / "recipe.json").is_file():
            return parent
    raise UniMoEError(f"{stage_dir} is not inside a training run (no recipe.json above it)")


def _recipe(stage_dir: Path):
    return recipe_from_dict(json.loads((_run_dir(stage_dir) / "recipe.json").read_text()))


def export(checkpoint: Path, stage_dir: Path, out: Path) -> Path:
    """A complete model directory from one trainer checkpoint."""
    if (out / "model.safetensors").is_file():
        return out
    run = _run_dir(stage_dir)
    info = json.loads((stage_dir / "stage.json").read_text()) if (stage_dir / "stage.json").is_file() else None
    if info is None:
        raise UniMoEError(f"{stage_dir}/stage.json is missing (written when a stage starts training)")
    recipe = _recipe(stage_dir)
    model = UniMoEAudioModel(UniMoEAudioConfig.from_dict(info["model"]))
    try:
        if checkpoint.is_dir():  # FSDP's shards
            state = sharding.read_model(checkpoint, model)
        else:
            state = torch.load(checkpoint, map_location="cpu", weights_only=False)
            model.load_state_dict(state["model"])
    except (OSError, RuntimeError, EOFError, ValueError) as err:
        raise UniMoEError(f"checkpoint {checkpoint} cannot be read ({err})") from None
    save_model(out, model, TextFrontend.load(run / "frontend.json"), generation=recipe.generation)
    load_codec(recipe.corpus.codec_dir).save_pretrained(out / "codec")
    write_json(out / "training.json", {"stage": stage_dir.name, "step": int(state["step"]),
                                       "corpus": str(Path(recipe.corpus.path).resolve())})
    return out


def judged_paths(stage_dir: Path, split: str) -> tuple[Path, Path]:
    """Where a split's scores go: `judged.jsonl` / `judged.png` for validation, else `judged-<split>.*`."""
    stem = "judged" if split == "validation" else f"judged-{split}"
    return stage_dir / f"{stem}.jsonl", stage_dir / f"{stem}.png"


def judge_checkpoints(stage_dir: str | Path, split: str = "validation", per_task: int = 4, every: int = 1,
                      seed: int = 0, progress: bool = True) -> list[dict]:
    """Judge every `every`-th kept checkpoint of a stage (and its final model); returns one row per step."""
    stage_dir = Path(stage_dir)
    checkpoints = list_checkpoints(stage_dir / "checkpoints")[::-1][::every][::-1]  # always the newest
    if not checkpoints:
        raise UniMoEError(f"no checkpoints in {stage_dir / 'checkpoints'}")
    groups = tuple(json.loads((stage_dir / "stage.json").read_text())["groups"]) if (stage_dir / "stage.json").is_file() else None
    tokens = whisper = None  # opened for the first checkpoint that needs judging
    log, png = judged_paths(stage_dir, split)
    rows = {r["step"]: r for r in read_metrics(log)} if log.is_file() else {}
    with atomic_path(log) as tmp:  # without a line a kill cut short, so new rows append cleanly
        tmp.write_text("".join(json.dumps(rows[s]) + "\n" for s in sorted(rows)), encoding="utf-8")
    for checkpoint in tqdm(checkpoints, desc=f"judging {stage_dir.name}", unit="checkpoint", disable=not progress):
        step = int(checkpoint.stem.split("-")[1])
        if step in rows:
            continue
        model_dir = export(checkpoint, stage_dir, stage_dir / "exports" / f"step-{step:07d}")
        report = evaluate(model_dir, split, per_task=per_task, seed=seed, groups=groups, progress=False,
                          out=model_dir / f"eval-{split}")
        if tokens is None:
            tokens, whisper = TokenDataset(Path(_recipe(stage_dir).corpus.path) / "tokens", split), WhisperJudge()
        forced = teacher_forced_scores(UniMoEAudio.from_pretrained(model_dir), tokens, per_task, groups, whisper)
        rows[step] = {"step": step, **{label: _get(report, path) for path, label in SCORES},
                      **{label: _get(forced, path) for path, label in TEACHER_FORCED}}
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(rows[step]) + "\n")
    ordered = [rows[s] for s in sorted(rows)]
    plot_judged(ordered, png, f"{stage_dir.name}: the judges on {split} items")
    return ordered


def _get(report: dict, path: tuple) -> float | None:
    for key in path:
        report = report.get(key) if isinstance(report, dict) else None
    return report if isinstance(report, (int, float)) and math.isfinite(report) else None


def plot_judged(rows: list[dict], png: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for (_, label), style in [*((score, "-") for score in SCORES), *((score, "--") for score in TEACHER_FORCED)]:
        pts = [(r["step"], r[label]) for r in rows if r.get(label) is not None]
        if pts:
            ax.plot(*zip(*pts), style, marker="o", ms=3, label=label)
    ax.set(xlabel="optimizer step", ylabel="score", title=title)
    ax.legend(fontsize=8)
    return save_figure(fig, png)
