"""The three-stage curriculum and its baselines as one resumable job (paper §III-C, REFERENCE.md §1).

    prepare     build the corpus, train the codec and encode tokens if missing; fit the front-end;
                a corpus with v2m items gives every model a vision encoder (model/vision.py)
    backbone    (optional) one dense model on `backbone_groups`, the specialists' common start
                (the paper's specialists all start from the pretrained Qwen2.5-VL backbone); with
                `init:` the first stage starts from a trained model instead of fresh weights
    specialists one dense model per task group (speech-en, speech-zh, music, v2m: those the corpus
                has), each on its own (unbalanced) data
    warmup      DCMoE from the specialists (FFN slices -> routed experts, the rest averaged);
                only gates and shared experts train, on a small balanced subset
    joint       everything trains on the balanced mix, aux-loss weight annealed
    baselines   naive-joint (dense, natural mix), dense-balanced (dense with the MoE's parameters),
                top-k (Top-K MoE matching Top-P's mean experts), scratch (the DCMoE without stages 1-2)

Every stage writes <out>/<stage>/model/, a complete model directory (`UniMoEAudio.from_pretrained`),
after its trainer (checkpoints, metrics.jsonl, TensorBoard, loss.png) finishes. Re-running the
same recipe skips finished stages and resumes an interrupted one from its last checkpoint.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.distributed as tdist

from unimoe_audio.codec import Codec, DelayPattern, SpectralCodec, SpectralCodecConfig, load_codec
from unimoe_audio.data import SPLITS, TASK_GROUPS, TokenDataset, encode_corpus, read_manifest
from unimoe_audio.data.build import build, built_groups
from unimoe_audio.errors import UniMoEError
from unimoe_audio.io import save_figure, write_json
from unimoe_audio.model import (FrontendPrompts, SequenceCollator, TextFrontend, UniMoEAudioConfig, UniMoEAudioModel,
                                VisionConfig, load_model, save_model)
from unimoe_audio.moe import DCMoEConfig
from unimoe_audio.train.config import BASELINES, STAGES, CorpusConfig, RecipeConfig, StageConfig, recipe_from_dict
from unimoe_audio.train.distributed import DistInfo
from unimoe_audio.train.trainer import Trainer, read_metrics
from unimoe_audio.train.upcycle import freeze_for_warmup, unfreeze, upcycle
from unimoe_audio.train.warm_start import warm_start

RUNNABLE = (*STAGES, "baselines", *BASELINES)


@dataclass
class Run:
    """Everything the stages share."""

    recipe: RecipeConfig
    out: Path
    codec: Codec
    frontend: TextFrontend
    base: UniMoEAudioConfig  # the dense specialist
    train_set: TokenDataset
    val_set: TokenDataset
    collate: SequenceCollator
    dist: DistInfo
    progress: bool

    @property
    def groups(self) -> list[str]:
        return [g for g in TASK_GROUPS if g in set(self.train_set.groups)]


def _barrier(dist: DistInfo) -> None:
    if dist.enabled:
        tdist.barrier()


def prepare(recipe: RecipeConfig, dist: DistInfo, progress: bool = True) -> Run:
    out, c = Path(recipe.out), recipe.corpus
    corpus = Path(c.path)
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        saved = out / "recipe.json"
        if saved.is_file() and not same_recipe(json.loads(saved.read_text()), recipe, started_stages(out)):
            raise UniMoEError(f"{out} holds a run of a different recipe; choose another `out` (or delete {out}); "
                              "only the settings of stages that have not started yet may change")
        built = (corpus / "train.jsonl").is_file()
        groups = {e["group"] for e in read_manifest(corpus / "train.jsonl")} if built else built_groups(c.size)
        recipe.moe_config(len(groups))  # the DCMoE the specialists will make, checked before any work
        write_json(saved, recipe.to_dict())
        if not built:
            build(corpus, c.size, c.seed, progress=progress)
        manifests = {split: read_manifest(corpus / f"{split}.jsonl") for split in SPLITS}  # every line checked first
        if not (c.codec_dir / "config.json").is_file():
            train_codec(corpus, manifests["train"], c, progress).save_pretrained(c.codec_dir)
        codec = load_codec(c.codec_dir)
        note_codec(codec, c)
        encode_corpus(corpus, codec, progress=progress, workers=os.cpu_count() or 1)
        if not (out / "frontend.json").is_file():
            TextFrontend.fit([e for entries in manifests.values() for e in entries]).save(out / "frontend.json")
    _barrier(dist)
    codec = load_codec(c.codec_dir)
    frontend = TextFrontend.load(out / "frontend.json")
    k = codec.num_codebooks
    tokens = corpus / "tokens"
    train_set = TokenDataset(tokens, "train")
    base = recipe.specialist_config(text_vocab_size=len(frontend), num_codebooks=k, codebook_size=codec.codebook_size,
                                    delays=run_delays(out, codec),
                                    vision=VisionConfig() if "v2m" in train_set.groups else None)
    collate = SequenceCollator(FrontendPrompts(frontend, DelayPattern(base.delays, base.codebook_size), base.vision),
                               base.cond_dropout, recipe.max_music_frames, base.audio_noise)
    return Run(recipe, out, codec, frontend, base, train_set, TokenDataset(tokens, "validation"), collate, dist, progress)


def train_codec(corpus: Path, entries: list[dict], c: CorpusConfig, progress: bool) -> SpectralCodec:
    """The corpus's codec, learnt on its training audio; with `grow_codes`, on the groups outside
    `grow_groups`, then grown by codes learnt on theirs (the first groups' codes stay theirs)."""
    config = SpectralCodecConfig(num_codebooks=c.codebooks, codebook_size=c.codebook_size, seed=c.seed,
                                 quantizer=c.quantizer, frames_per_step=c.frames_per_step)
    base = [corpus / e["audio"] for e in entries if e["group"] not in c.grow_groups]
    more = [corpus / e["audio"] for e in entries if e["group"] in c.grow_groups]
    if not base:
        raise UniMoEError(f"the codec learns from the training audio outside corpus.grow_groups "
                          f"{list(c.grow_groups)}, and {corpus} has none")
    if c.grow_codes and not more:
        raise UniMoEError(f"corpus.grow_groups {list(c.grow_groups)} have no training audio in {corpus} to grow the codec on")
    codec = SpectralCodec.train_on_files(base, config, c.codec_minutes, progress)
    return codec.extended_on_files(more, c.grow_codes, c.grow_minutes, progress) if c.grow_codes else codec


def run_delays(out: Path, codec: Codec) -> tuple[int, ...]:
    """The delay pattern of the run in `out`: the one its stages have been trained with (a run
    started before band codecs moved to delay 0 keeps its own), else the codec's."""
    stages = sorted([*out.glob("*/stage.json"), *out.glob("*/*/stage.json")])  # stages, specialists, baselines
    return tuple(json.loads(stages[0].read_text())["model"]["delays"]) if stages else codec.delays


def note_codec(codec: Codec, c: CorpusConfig) -> None:
    """The recipe's codec settings apply only when the corpus has no codec yet: say so on stderr
    when the codec in use has others (a changed `quantizer` or `codebooks` would otherwise look
    as if it had been applied)."""
    if c.codec is not None or not isinstance(codec, SpectralCodec):
        return
    have = (codec.config.num_codebooks, codec.codebook_size, codec.config.quantizer, codec.config.frames_per_step)
    want = (c.codebooks, c.codebook_size + c.grow_codes, c.quantizer, c.frames_per_step)
    if have != want:
        print(f"note: using the codec at {c.codec_dir} ({have[0]} {have[2]} codebooks of {have[1]}, {have[3]} frames per "
              f"step); the recipe's {want[0]} {want[2]} codebooks of {want[1]}, {want[3]} frames per step, apply only to a "
              f"corpus without a codec (use another "
              f"corpus.path, or delete {c.codec_dir} and {Path(c.path) / 'tokens'})", file=sys.stderr)


def started_stages(out: Path) -> set[str]:
    """The stages (and baselines) of a run that hold a checkpoint or a finished model."""
    marks = [*out.glob("*/checkpoints/step-*"), *out.glob("*/*/checkpoints/step-*"),
             *out.glob("*/model/model.safetensors"), *out.glob("*/*/model/model.safetensors")]
    return {"/".join(m.relative_to(out).parts[:2]) if m.relative_to(out).parts[0] == "baselines"
            else m.relative_to(out).parts[0] for m in marks}


def same_recipe(saved: dict, recipe: RecipeConfig, started: set[str] | None = None) -> bool:
    """Whether a run's saved recipe is `recipe`, as far as its started stages go.

    Settings added to the schema since the run was saved count with their defaults, so a newer
    version of the code resumes an older run. The settings of stages not yet `started` (names as
    in `started_stages`; None: all started) may change, so a long run's later stages can be
    retuned while its first stage trains or after it has finished; so may `generation`, which
    changes how the models decode, not what they learn.
    """
    try:
        before, after = recipe_from_dict(saved).to_dict(), recipe.to_dict()
    except UniMoEError:  # a setting the schema no longer has
        return False
    before, after = json.loads(json.dumps(before)), json.loads(json.dumps(after))
    before.pop("generation"), after.pop("generation")
    if started is not None:
        for key, name in [("stages", s) for s in STAGES] + [("baselines", b) for b in BASELINES]:
            if (name if key == "stages" else f"baselines/{name}") not in started:
                before[key].pop(name, None), after[key].pop(name, None)
    return before == after


def finished(run: Run, name: str) -> UniMoEAudioModel | None:
    """The model of a finished stage (`<out>/<name>/model`), or None if the stage has not finished."""
    final = run.out / name / "model"
    return load_model(final)[0] if (final / "model.safetensors").is_file() else None


def train_stage(run: Run, name: str, model: UniMoEAudioModel, config: StageConfig,
                only: tuple[str, ...] | None = None) -> UniMoEAudioModel:
    """Train (or resume) one stage; a finished stage is loaded instead. Returns the trained model."""
    if (done := finished(run, name)) is not None:
        return done
    final = run.out / name / "model"
    trainer = Trainer(model, config, run.train_set, run.collate, run.out / name, val_set=run.val_set, only=only,
                      seed=run.recipe.seed, dist=run.dist, progress=run.progress, name=name)
    model = trainer.fit(resume=True)
    if run.dist.is_main:
        save_model(final, model, run.frontend, generation=run.recipe.generation)
        run.codec.save_pretrained(final / "codec")
        write_json(final / "training.json", {"stage": name, "corpus": str(Path(run.recipe.corpus.path).resolve()),
                                             "recipe": run.recipe.name})
    _barrier(run.dist)
    return model.cpu()


def moe_config(run: Run, **changes) -> DCMoEConfig:
    """The DCMoE built from one specialist per task group (RecipeConfig.moe_config)."""
    return run.recipe.moe_config(len(run.groups), **changes)


def fresh(run: Run, config: UniMoEAudioConfig) -> UniMoEAudioModel:
    torch.manual_seed(run.recipe.seed)  # every process starts from the same weights
    return UniMoEAudioModel(config)


def first(run: Run) -> UniMoEAudioModel:
    """Where the first stage starts (the backbone, else each specialist): fresh weights, or those
    of the recipe's `init` model."""
    model = fresh(run, run.base)
    return model if run.recipe.init is None else warm_start(model, run.frontend, run.recipe.init, run.codec)


def backbone(run: Run) -> UniMoEAudioModel | None:
    """The specialists' common starting point, if the recipe has a backbone stage."""
    if "backbone" not in run.recipe.stages:
        return None
    if (done := finished(run, "backbone")) is not None:
        return done
    groups = tuple(g for g in run.groups if g in run.recipe.backbone_groups) or tuple(run.groups)
    return train_stage(run, "backbone", first(run), run.recipe.stages["backbone"], only=groups)


def specialists(run: Run) -> list[UniMoEAudioModel]:
    stage = run.recipe.stages["specialists"]
    done = [finished(run, f"specialists/{g}") for g in run.groups]
    start = backbone(run) if None in done else None
    return [model if model is not None else
            train_stage(run, f"specialists/{g}", copy.deepcopy(start) if start is not None else first(run),
                        replace(stage, steps=stage.group_steps.get(g, stage.steps)), only=(g,))
            for g, model in zip(run.groups, done)]


def warmup(run: Run) -> UniMoEAudioModel:
    if (done := finished(run, "warmup")) is not None:
        return done
    # The vision encoder comes from the v2m specialist alone: the others never trained it.
    owner = {"vision.": run.groups.index("v2m")} if "v2m" in run.groups else {}
    model = upcycle(specialists(run), fresh(run, replace(run.base, ffn="moe", moe=moe_config(run))), owner)
    freeze_for_warmup(model)
    return train_stage(run, "warmup", model, run.recipe.stages["warmup"])


def joint(run: Run) -> UniMoEAudioModel:
    if (done := finished(run, "joint")) is not None:
        return done
    model = warmup(run)
    unfreeze(model)
    return train_stage(run, "joint", model, run.recipe.stages["joint"])


@torch.no_grad()
def mean_experts(run: Run, model: UniMoEAudioModel) -> float:
    """Routed experts per token on the validation split (the Top-K baseline's K)."""
    model.eval()
    values = [model(**run.collate([run.val_set[i] for i in range(start, min(start + 8, len(run.val_set)))])).experts_per_token
              for start in range(0, len(run.val_set), 8)]
    return float(sum(values) / len(values))


def baseline(run: Run, name: str) -> UniMoEAudioModel:
    if name not in run.recipe.baselines:
        raise UniMoEError(f"the recipe has no settings for baseline {name!r} (under `baselines:`)")
    stage = run.recipe.baselines[name]
    moe = moe_config(run)
    if name == "naive-joint":
        config = run.base
    elif name == "dense-balanced":  # as many parameters as the MoE's FFN
        config = run.base.dense(moe.num_routed * moe.routed_size + moe.num_shared * moe.shared_size)
    elif name == "top-k":
        k = min(moe.num_dynamic, max(1, round(mean_experts(run, joint(run)))))
        config = replace(run.base, ffn="moe", moe=replace(moe, routing="top_k", top_k=k))
    else:  # scratch
        config = replace(run.base, ffn="moe", moe=moe)
    return train_stage(run, f"baselines/{name}", fresh(run, config), stage)


def run_recipe(recipe: RecipeConfig, what: str = "all", dist: DistInfo | None = None, progress: bool = True) -> dict:
    """Run the whole recipe (`what="all"`), one stage, all baselines or one baseline; returns the summary."""
    if what not in ("all", *RUNNABLE):
        raise UniMoEError(f"unknown stage {what!r}; choose all or one of {', '.join(RUNNABLE)}")
    if what == "backbone" and "backbone" not in recipe.stages:
        raise UniMoEError("the recipe has no backbone stage (add `backbone:` under `stages:`)")
    run = prepare(recipe, dist or DistInfo(), progress)
    if what in ("all", "joint"):
        joint(run)
    elif what == "warmup":
        warmup(run)
    elif what == "specialists":
        specialists(run)
    elif what == "backbone":
        backbone(run)
    names = list(recipe.baselines) if what in ("all", "baselines") else [what] if what in BASELINES else []
    for name in names:
        baseline(run, name)
    summary = summarize(run)
    if run.dist.is_main:
        write_json(run.out / "summary.json", summary)
        if (run.out / "warmup" / "metrics.jsonl").is_file() and (run.out / "joint" / "metrics.jsonl").is_file():
            plot_handover(run.out, run.out / "curriculum-loss.png")
    return summary


def summarize(run: Run) -> dict:
    """Final validation loss per task group of every finished system."""
    systems = {}
    for metrics in sorted(run.out.glob("**/metrics.jsonl")):
        name = str(metrics.parent.relative_to(run.out))
        if not (metrics.parent / "model" / "config.json").is_file():
            continue
        rows = [r for r in read_metrics(metrics) if "eval/loss" in r]
        if rows:
            last = rows[-1]
            systems[name] = {"step": last["step"], "model": str(metrics.parent / "model"),
                             **{k.removeprefix("eval/"): v for k, v in last.items() if k.startswith("eval/")}}
    return {"recipe": run.recipe.name, "systems": systems}


def plot_handover(out: Path, png: Path) -> Path:
    """Validation loss per task across warm-up then joint training (paper Fig. 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    offset, series = 0, {}
    for stage in ("warmup", "joint"):
        rows = read_metrics(out / stage / "metrics.jsonl")
        for r in rows:
            for key, value in r.items():
                if key.startswith("eval/") and math.isfinite(value):
                    series.setdefault(key, []).append((offset + r["step"], value))
        boundary = offset + max((r["step"] for r in rows), default=0)
        if stage == "warmup":
            ax.axvline(boundary, color="grey", ls="--", lw=1)
            ax.text(boundary, 1.0, " joint", transform=ax.get_xaxis_transform(), va="top", fontsize=8)
        offset = boundary
    for key, pts in sorted(series.items()):
        ax.plot(*zip(*pts), marker="o", ms=3, label=key.replace("eval/", "val "))
    ax.set(xlabel="optimizer step (warm-up, then joint)", ylabel="validation loss", title="curriculum hand-over")
    ax.legend(fontsize=8)
    return save_figure(fig, png)
