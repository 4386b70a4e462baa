"""`unimoe-audio quickstart`: the whole system on built-in defaults, in a few minutes on a CPU.

Builds the tiny corpus, trains the codec, runs the tiny curriculum (specialists -> warm-up ->
joint), generates an English, a Mandarin and a music clip and music for a test video, evaluates the model on the test split
and analyses its routing; prints where everything is.
"""

from __future__ import annotations

import time
from pathlib import Path

from unimoe_audio.codec import save_audio
from unimoe_audio.data import read_manifest
from unimoe_audio.errors import UniMoEError
from unimoe_audio.eval.routing import analyze_routing
from unimoe_audio.eval.spectral import plot_spectrograms
from unimoe_audio.eval.suite import evaluate
from unimoe_audio.model import GenerationConfig, UniMoEAudio
from unimoe_audio.model.frontend import mandarin_pinyin
from unimoe_audio.train.config import load_recipe
from unimoe_audio.train.curriculum import run_recipe

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "curriculum-tiny.yaml"
SPEECH = {"en": "The birch canoe slid on the smooth planks.", "zh": "今天天气很好"}


def register(subparsers) -> None:
    p = subparsers.add_parser("quickstart", help="tiny corpus -> tiny curriculum -> speech and music clips -> report")
    p.add_argument("--config", type=Path, default=RECIPE, help="recipe (default: configs/curriculum-tiny.yaml)")
    p.add_argument("--seed", type=int, default=0, help="generation seed")
    p.set_defaults(func=run)


def samples(api: UniMoEAudio, corpus: Path, out: Path, seed: int) -> dict[str, Path]:
    """One clip per task family the corpus has (speech in each language the model has a speaker
    for, music if the test split has a caption, music for a video if it has a v2m item), and a
    PNG of their spectrograms."""
    language_of = {e["speaker"]: e["language"] for e in read_manifest(corpus / "train.jsonl") if e["task"] == "tts"}
    speakers = {lang: next((s for s in api.speakers if language_of.get(s) == lang), None) for lang in SPEECH}
    test = read_manifest(corpus / "test.jsonl")
    music = next((e for e in test if e["task"] == "t2m"), None)
    video = next((e for e in test if e["task"] == "v2m"), None)
    clips, titles = {}, {}
    for lang, text in SPEECH.items():
        if speakers[lang] is None:
            print(f"no speech-{lang} clip: the corpus has no {lang} speaker")
            continue
        clips[f"speech-{lang}"] = api.tts(text, language=lang, speaker=speakers[lang], config=GenerationConfig(seed=seed))
        titles[f"speech-{lang}"] = text if lang == "en" else mandarin_pinyin(text)
    if music is None:
        print("no music clip: the corpus's test split has no music items")
    else:
        clips["music"] = api.music(music["caption"], duration=8.0, config=GenerationConfig(seed=seed))
        titles["music"] = music["caption"]
    if video is not None and api.model.config.vision is not None:
        clips["v2m"] = api.music(video["caption"], duration=8.0, video=corpus / video["video"],
                                 config=GenerationConfig(seed=seed))
        titles["v2m"] = f"{video['video']}: {video['caption']}"
    if clips:
        plot_spectrograms(clips, titles, out / "samples.png")
    return {name: save_audio(out / f"{name}.wav", wave, rate) for name, (wave, rate) in clips.items()}


def run(args) -> int:
    if not args.config.is_file():
        raise UniMoEError(f"recipe {args.config} not found; run from a clone of the repository or pass --config")
    start = time.perf_counter()
    recipe = load_recipe(args.config)
    run_recipe(recipe, "joint")  # the curriculum; `unimoe-audio reproduce` adds the baselines
    out = Path(recipe.out)
    model_dir = out / "joint" / "model"
    api = UniMoEAudio.from_pretrained(model_dir)
    clips = samples(api, Path(recipe.corpus.path), out / "samples", args.seed)
    report = evaluate(model_dir, "test", per_task=2, seed=args.seed)
    routing = analyze_routing(model_dir)
    minutes = (time.perf_counter() - start) / 60
    print(f"\nquickstart finished in {minutes:.1f} min")
    print(f"  corpus          {recipe.corpus.path}/ (report.md; tokens/)")
    print(f"  models          {out}/specialists/*/model, {out}/warmup/model, {out}/joint/model")
    print(f"  training        {out}/summary.json, {out}/curriculum-loss.png, {out}/*/tensorboard")
    for name, path in clips.items():
        print(f"  {name:<15} {path}")
    print(f"  spectrograms    {out}/samples/samples.png")
    print(f"  evaluation      {report['output']}/results.md")
    print(f"  routing         {routing['output']}/routing.png")
    print()
    print((Path(report["output"]) / "results.md").read_text(), end="")
    return 0
