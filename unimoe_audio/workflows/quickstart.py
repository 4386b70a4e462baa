"""The quick start: the whole system on built-in defaults, in a few minutes on a CPU.

Builds the tiny corpus, trains the codec, runs the tiny curriculum (specialists -> warm-up ->
joint), generates an English, a Mandarin and a music clip and music for a test video, evaluates
the model on the test split and analyses its routing.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from unimoe_audio.codec import save_audio
from unimoe_audio.data import read_manifest
from unimoe_audio.errors import UniMoEError
from unimoe_audio.eval.routing import analyze_routing
from unimoe_audio.eval.spectral import plot_spectrograms
from unimoe_audio.eval.suite import evaluate
from unimoe_audio.model import UniMoEAudio
from unimoe_audio.model.frontend import mandarin_pinyin
from unimoe_audio.train.config import load_recipe
from unimoe_audio.train.curriculum import run_recipe

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "curriculum-tiny.yaml"
SPEECH = {"en": "The birch canoe slid on the smooth planks.", "zh": "今天天气很好"}


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
        clips[f"speech-{lang}"] = api.tts(text, language=lang, speaker=speakers[lang],
                                          config=replace(api.default_config("tts", text, lang), seed=seed))
        titles[f"speech-{lang}"] = text if lang == "en" else mandarin_pinyin(text)
    if music is None:
        print("no music clip: the corpus's test split has no music items")
    else:
        clips["music"] = api.music(music["caption"], duration=8.0, config=replace(api.default_config("t2m"), seed=seed))
        titles["music"] = music["caption"]
    if video is not None and api.takes_video:
        clips["v2m"] = api.music(video["caption"], duration=8.0, video=corpus / video["video"],
                                 config=replace(api.default_config("v2m"), seed=seed))
        titles["v2m"] = f"{video['video']}: {video['caption']}"
    if clips:
        plot_spectrograms(clips, titles, out / "samples.png")
    return {name: save_audio(out / f"{name}.wav", wave, rate) for name, (wave, rate) in clips.items()}


def quickstart(config: Path = RECIPE, seed: int = 0) -> dict:
    """Train the recipe's curriculum (resuming), then make the clips, the report and the routing
    analysis; returns where they are: recipe, model, clips {name: path}, report, routing."""
    if not Path(config).is_file():
        raise UniMoEError(f"recipe {config} not found; run from a clone of the repository or pass --config")
    recipe = load_recipe(config)
    run_recipe(recipe, "joint")  # the curriculum; `unimoe-audio reproduce` adds the baselines
    out = Path(recipe.out)
    model_dir = out / "joint" / "model"
    api = UniMoEAudio.from_pretrained(model_dir)
    clips = samples(api, Path(recipe.corpus.path), out / "samples", seed)
    report = evaluate(model_dir, "test", per_task=2, seed=seed)
    routing = analyze_routing(model_dir)
    return {"recipe": recipe, "model": model_dir, "clips": clips, "report": Path(report["output"]),
            "routing": Path(routing["output"])}
