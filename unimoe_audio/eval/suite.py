"""`unimoe-audio eval`: generate the test split and score it, always beside the ground truth.

Speech: Whisper-base WER (English) / CER (Mandarin) and pocketsphinx WER (English) on the
generated audio and on the ground-truth recordings; for voice cloning, resemblyzer similarity
between the prompt and the generated speech, beside the ceiling (prompt vs the real target: same
speaker, another utterance) and the floor (prompt vs a different test speaker). Music: Fréchet
distance (eval/music.py) between generated and reference clips, beside the distance between two
halves of the reference set; caption adherence for tempo, key, mode and texture (solo vs parts)
on generated and reference audio. Video-to-music: what the video determines, tempo, beat
alignment between the video's pulses and the clip's beats, key and mode (when the entry states
them), for the music made for each item's own video, for the same caption and seed with another
item's video (the mismatched control: if the model follows the video it scores worse), and for
the ground truth. Speed: real-time factor of generation per task.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from unimoe_audio.codec import load_audio, save_audio
from unimoe_audio.data import read_manifest
from unimoe_audio.data.tokens import MAX_VIDEO_SECONDS
from unimoe_audio.data.videos import RENDER_FPS
from unimoe_audio.errors import UniMoEError
from unimoe_audio.eval import music as mm
from unimoe_audio.eval.ceiling import RATE, GroundTruthCache
from unimoe_audio.eval.judges import SpeakerJudge, SphinxJudge, WhisperJudge
from unimoe_audio.eval.text import char_error_rate, word_error_rate
from unimoe_audio.io import atomic_path, write_json
from unimoe_audio.model import UniMoEAudio
from unimoe_audio.video import read_video


def corpus_of(model_dir: Path) -> Path:
    """The corpus a model was trained on (recorded by the trainer in training.json)."""
    info = Path(model_dir) / "training.json"
    if not info.is_file():
        raise UniMoEError(f"{model_dir} does not record its corpus; pass --corpus DIR")
    try:
        return Path(json.loads(info.read_text(encoding="utf-8"))["corpus"])
    except (ValueError, KeyError, TypeError) as err:
        raise UniMoEError(f"{info} is damaged ({err!r}); pass --corpus DIR") from None


def select(entries: list[dict], per_task: int | None) -> list[dict]:
    """At most `per_task` items of each (task, group), in manifest order."""
    if per_task is None:
        return entries
    seen: dict = defaultdict(int)
    chosen = []
    for e in entries:
        key = (e["task"], e["group"])
        if seen[key] < per_task:
            chosen.append(e)
            seen[key] += 1
    return chosen


MISMATCHED = "#mismatched"  # suffix of the id under which a v2m item's mismatched-video output is kept


def mismatched(entries: list[dict]) -> dict[str, dict]:
    """For each v2m entry, another v2m entry whose video serves as the control: the next one (in
    turn) whose tempo differs, else the next one."""
    items = [e for e in entries if e["task"] == "v2m"]
    out = {}
    for i, e in enumerate(items):
        others = items[i + 1:] + items[:i]
        out[e["id"]] = next((o for o in others if o.get("bpm") != e.get("bpm")), others[0] if others else None)
    return {k: v for k, v in out.items() if v is not None}


def generate_split(api: UniMoEAudio, corpus: Path, entries: list[dict], out: Path, seed: int,
                   max_music_seconds: float, progress: bool) -> dict[str, dict]:
    """Generate every entry (one at a time, seeded), and each v2m entry again with its mismatched
    video (id + MISMATCHED, same caption and seed); returns id -> {path, seconds, elapsed}."""
    controls = mismatched(entries)
    jobs = [(i, e, e) for i, e in enumerate(entries)] + [(i, e, controls[e["id"]]) for i, e in enumerate(entries)
                                                         if e["id"] in controls]
    results = {}
    for i, e, shown in tqdm(jobs, desc="generating test items", unit="item", disable=not progress):
        if e["task"] in ("t2m", "v2m"):
            seconds = min(e.get("duration") or max_music_seconds, max_music_seconds)  # duration is optional
            config = replace(api.default_config(e["task"], duration=seconds), seed=seed + i)
            video = None
            if e["task"] == "v2m":  # the video's first `seconds` (looped if it is shorter)
                if not api.takes_video:
                    raise UniMoEError(f"{e['id']} is a v2m item but this model takes no video; "
                                      "evaluate it on the other task groups (groups=...)")
                fps, size, _ = api.video_format()
                video = torch.from_numpy(read_video(corpus / shown["video"], fps, size, MAX_VIDEO_SECONDS)[0])
                video = video[torch.arange(math.ceil(seconds * fps)) % len(video)]
            request = api.request(e["task"], caption=e["caption"], video=video)
        else:
            config = replace(api.default_config(e["task"], e["text"], e["language"]), seed=seed + i)
            prompt = corpus / e["prompt_audio"] if e["task"] == "clone" else None
            request = api.request(e["task"], text=e["text"], language=e["language"],
                                  speaker=e["speaker"] if e["task"] == "tts" else None,
                                  prompt_audio=prompt, prompt_text=e.get("prompt_text", ""))
        start = time.perf_counter()
        wave = api.generate([request], config)[0]
        elapsed = time.perf_counter() - start
        name = e["id"] if shown is e else e["id"] + MISMATCHED
        path = out / "audio" / f"{name}.wav"
        # A model that stops at once produced nothing: judge that as 0.1 s of silence.
        shortest = api.sample_rate // 10
        save_audio(path, np.pad(wave, (0, max(0, shortest - len(wave)))), api.sample_rate)
        results[name] = {"path": path, "seconds": len(wave) / api.sample_rate, "elapsed": elapsed,
                            "empty": len(wave) < shortest}
    return results


def score_speech(entries, generated, corpus: Path, progress: bool) -> dict:
    whisper, sphinx, speaker = WhisperJudge(), SphinxJudge(), SpeakerJudge()
    cache = GroundTruthCache(corpus)
    out = {}
    for language, rate_fn, name in (("en", word_error_rate, "wer"), ("zh", char_error_rate, "cer")):
        items = [e for e in entries if e["task"] in ("tts", "clone") and e["language"] == language]
        if not items:
            continue
        refs, gen_w, gt_w, gen_s, gt_s = [], [], [], [], []
        for e in tqdm(items, desc=f"judging {language} speech", unit="item", disable=not progress):
            gen = load_audio(generated[e["id"]]["path"], RATE)[0]
            gt = load_audio(corpus / e["audio"], RATE)[0]
            refs.append(e["text"])
            gen_w.append(whisper.transcribe(gen, RATE, language))
            gt_w.append(cache.get(f"whisper:{language}:{e['audio']}", lambda: whisper.transcribe(gt, RATE, language)))
            if language == "en":
                gen_s.append(sphinx.transcribe(gen, RATE))
                gt_s.append(cache.get(f"sphinx:{e['audio']}", lambda: sphinx.transcribe(gt, RATE)))
        result = {"items": len(items), f"{name}_whisper": rate_fn(refs, gen_w), f"{name}_whisper_ground_truth": rate_fn(refs, gt_w),
                  "examples": [{"text": r, "generated": g, "ground_truth": t} for r, g, t in list(zip(refs, gen_w, gt_w))[:3]]}
        if language == "en":
            result.update(wer_sphinx=word_error_rate(refs, gen_s), wer_sphinx_ground_truth=word_error_rate(refs, gt_s))
        out[f"speech-{language}"] = result

    clones = [e for e in entries if e["task"] == "clone"]
    if clones:
        def similarity(a: Path, b: Path) -> float | None:
            try:
                return speaker.similarity(load_audio(a, RATE)[0], RATE, load_audio(b, RATE)[0], RATE)
            except UniMoEError:  # under 0.25 s of voiced audio
                return None

        def mean(values) -> float | None:
            values = [v for v in values if v is not None]
            return float(np.mean(values)) if values else None

        sims, ceiling, floor = [], [], []
        for e in tqdm(clones, desc="judging voice cloning", unit="item", disable=not progress):
            prompt = corpus / e["prompt_audio"]
            sims.append(similarity(prompt, generated[e["id"]]["path"]) or 0.0)  # nothing voiced: dissimilar
            ceiling.append(cache.get(f"similarity:{e['prompt_audio']}:{e['audio']}", lambda: similarity(prompt, corpus / e["audio"])))
            other = next((o for o in entries if o["task"] in ("tts", "clone") and o["speaker"] != e["speaker"]), None)
            if other is not None:
                floor.append(cache.get(f"similarity:{e['prompt_audio']}:{other['audio']}",
                                       lambda: similarity(prompt, corpus / other["audio"])))
        out["clone"] = {"items": len(clones), "similarity": mean(sims), "similarity_ceiling": mean(ceiling),
                        "similarity_floor": mean(floor)}
    cache.save()
    return out


def score_music(entries, generated, corpus: Path) -> dict:
    items = [e for e in entries if e["task"] == "t2m"]
    if not items:
        return {}
    gen = [load_audio(generated[e["id"]]["path"], RATE)[0] for e in items]
    ref = [load_audio(corpus / e["audio"], RATE)[0] for e in items]

    # Each adherence score covers the clips whose manifest entry states what it checks (an imported
    # corpus's captions may state no tempo, key or texture); the rest are counted as unscored.
    def share(matches: list[bool]) -> float | None:
        return float(np.mean(matches)) if matches else None

    def adherence(waves):
        stated = {field: [(w, e) for w, e in zip(waves, items) if e.get(field) is not None] for field in ("bpm", "key", "parts")}
        keys = [(mm.estimate_key(w), e["key"]) for w, e in stated["key"]]
        return {"tempo_accuracy": share([mm.tempo_matches(mm.estimate_tempo(w), e["bpm"]) for w, e in stated["bpm"]]),
                "key_accuracy": share([k == mm.normalize_key(key) for k, key in keys]),
                "mode_accuracy": share([k.split()[-1] == key.split()[-1] for k, key in keys]),
                "texture_accuracy": share([mm.is_solo(w) == (e["parts"] == 1) for w, e in stated["parts"]])}

    ref_emb = mm.set_embedding(ref)
    half = len(ref) // 2
    unscored = {field: sum(e.get(field) is None for e in items) for field in ("bpm", "key", "parts")}
    result = {"items": len(items), "generated": adherence(gen), "ground_truth": adherence(ref),
              "unscored": {field: n for field, n in unscored.items() if n}}
    try:
        result["frechet"] = mm.frechet_distance(mm.set_embedding(gen), ref_emb)
        result["frechet_reference_halves"] = (mm.frechet_distance(mm.set_embedding(ref[:half]), mm.set_embedding(ref[half:]))
                                              if half else None)
    except UniMoEError as err:
        result["frechet"] = None
        result["frechet_note"] = str(err)
    return result


def score_v2m(entries, generated, corpus: Path) -> dict:
    """What each v2m item's video determines, scored on the music made for it, on the music made for
    the same caption with a mismatched video, and on the ground truth (all against the item's own
    video and manifest)."""
    items = [e for e in entries if e["task"] == "v2m"]
    if not items:
        return {}
    beats = {}
    for e in items:
        frames, fps = read_video(corpus / e["video"], fps=RENDER_FPS, size=32, max_seconds=MAX_VIDEO_SECONDS)
        beats[e["id"]] = mm.video_beats(frames, fps)

    def scores(waves: list[np.ndarray]) -> dict:
        def share(matches):
            return float(np.mean(matches)) if matches else None

        keyed = [(mm.estimate_key(w), e["key"]) for w, e in zip(waves, items) if e.get("key")]
        aligned = [mm.beat_alignment(beats[e["id"]][beats[e["id"]] < len(w) / RATE], mm.audio_beats(w))
                   for w, e in zip(waves, items)]
        aligned = [a for a in aligned if a is not None]
        return {"tempo_accuracy": share([mm.tempo_matches(mm.estimate_tempo(w), e["bpm"]) for w, e in zip(waves, items)
                                         if e.get("bpm")]),
                "key_accuracy": share([k == mm.normalize_key(key) for k, key in keyed]),
                "mode_accuracy": share([k.split()[-1] == key.split()[-1] for k, key in keyed]),
                "beat_alignment": float(np.mean(aligned)) if aligned else None}

    def waves(paths):
        return [load_audio(p, RATE)[0] for p in paths]

    result = {"items": len(items), "matched": scores(waves([generated[e["id"]]["path"] for e in items])),
              "ground_truth": scores(waves([corpus / e["audio"] for e in items]))}
    if all(e["id"] + MISMATCHED in generated for e in items):
        result["mismatched"] = scores(waves([generated[e["id"] + MISMATCHED]["path"] for e in items]))
    return result


def evaluate(model_dir: str | Path, split: str = "test", corpus: str | Path | None = None, out: str | Path | None = None,
             per_task: int | None = None, seed: int = 0, max_music_seconds: float = 10.0, progress: bool = True,
             groups: tuple[str, ...] | None = None) -> dict:
    """Generate and score `split` (only the task `groups` given, e.g. a specialist's own)."""
    model_dir = Path(model_dir)
    corpus = Path(corpus) if corpus else corpus_of(model_dir)
    manifest = corpus / f"{split}.jsonl"
    if not manifest.is_file():
        raise UniMoEError(f"no {split} split at {manifest}")
    out = Path(out) if out else model_dir.parent / f"eval-{split}"
    api = UniMoEAudio.from_pretrained(model_dir)
    entries = select([e for e in read_manifest(manifest) if groups is None or e["group"] in groups], per_task)
    generated = generate_split(api, corpus, entries, out, seed, max_music_seconds, progress)
    music = score_music(entries, generated, corpus)
    v2m = score_v2m(entries, generated, corpus)
    if v2m:
        music["v2m"] = v2m
    speed = {}
    for task in sorted({e["task"] for e in entries}):
        ids = [e["id"] for e in entries if e["task"] == task]
        audio = sum(generated[i]["seconds"] for i in ids)
        speed[task] = sum(generated[i]["elapsed"] for i in ids) / max(audio, 1e-9)
    report = {"model": str(model_dir), "corpus": str(corpus), "split": split, "seed": seed, "per_task": per_task,
              "groups": list(groups) if groups else None,
              **score_speech(entries, generated, corpus, progress),
              "music": music, "real_time_factor": speed,
              "empty_outputs": sum(g["empty"] for g in generated.values())}
    write_json(out / "results.json", report)
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(markdown(report), encoding="utf-8")
    report["output"] = str(out)
    return report


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown(r: dict) -> str:
    lines = [f"# Evaluation of `{r['model']}` on the {r['split']} split", "",
             "| metric | generated | ground truth |", "|---|---|---|"]
    for lang, name in (("en", "wer"), ("zh", "cer")):
        s = r.get(f"speech-{lang}")
        if s:
            lines.append(f"| {lang} {name.upper()} (Whisper-base, {s['items']} items) | {_fmt(s[f'{name}_whisper'])} | "
                         f"{_fmt(s[f'{name}_whisper_ground_truth'])} |")
            if lang == "en":
                lines.append(f"| en WER (pocketsphinx) | {_fmt(s['wer_sphinx'])} | {_fmt(s['wer_sphinx_ground_truth'])} |")
    c = r.get("clone")
    if c:
        lines.append(f"| speaker similarity to the prompt ({c['items']} clones; floor {_fmt(c['similarity_floor'])}) | "
                     f"{_fmt(c['similarity'])} | {_fmt(c['similarity_ceiling'])} |")
    m = r.get("music") or {}
    if m.get("items"):  # text-to-music items (a v2m-only evaluation has none)
        for key in ("tempo_accuracy", "key_accuracy", "mode_accuracy", "texture_accuracy"):
            lines.append(f"| music {key.replace('_', ' ')} ({m['items']} clips) | {_fmt(m['generated'][key])} | "
                         f"{_fmt(m['ground_truth'][key])} |")
        if m.get("unscored"):
            missing = ", ".join(f"{n} without {field}" for field, n in m["unscored"].items())
            lines.append(f"| music clips left out of the adherence scores ({missing} in the manifest) | | |")
        lines.append(f"| music Fréchet distance to the references (24-d) | {_fmt(m.get('frechet'))} | "
                     f"{_fmt(m.get('frechet_reference_halves'))} (two halves of the references) |")
    v = m.get("v2m")
    if v:
        lines += ["", f"Video-to-music ({v['items']} clips), scored against each item's own video and manifest:", "",
                  "| metric | own video | mismatched video (control) | ground truth |", "|---|---|---|---|"]
        for key in ("beat_alignment", "tempo_accuracy", "key_accuracy", "mode_accuracy"):
            lines.append(f"| {key.replace('_', ' ')} | {_fmt(v['matched'][key])} | "
                         f"{_fmt(v.get('mismatched', {}).get(key))} | {_fmt(v['ground_truth'][key])} |")
        lines += ["", "| metric | generated | ground truth |", "|---|---|---|"]
    lines.append(f"| outputs shorter than 0.1 s (judged as silence) | {r['empty_outputs']} | |")
    for task, rtf in r["real_time_factor"].items():
        lines.append(f"| real-time factor, {task} | {_fmt(rtf)} | |")
    return "\n".join(lines) + "\n"
