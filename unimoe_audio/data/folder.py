"""`data import`: a plain folder of audio files with same-named .txt files -> a corpus.

For speech the .txt holds the transcript, for music the caption. For video-to-music (`v2m`) the
folder holds video files (VIDEO_SUFFIXES), each with a same-named audio file (the music) and
.txt (the caption) beside it. Files in sub-folders take the
sub-folder's name as speaker (LibriTTS/AISHELL-style `speaker/utterance.wav`); files at the top
level take the folder's name. Manifests point at the audio where it lies (paths relative to the
corpus folder); nothing is copied. Unreadable audio, missing or empty .txt files are skipped
with the reason in the report; speech speakers with two or more utterances give voice-cloning
pairs as in the built corpus. Importing into a corpus folder that already has manifests keeps
the entries of other folders, so a speech folder and a music folder make one corpus.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from unimoe_audio.codec.audio import AUDIO_SUFFIXES, load_audio
from unimoe_audio.data.build import clone_pairs, make_report, split_of, write_manifests, write_report
from unimoe_audio.data.schema import SPLITS, group_of, read_manifest
from unimoe_audio.errors import UniMoEError
from unimoe_audio.video import read_video

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v")

CLONE_FRACTION = 0.2  # of training utterances that also become cloning targets, as in the built corpus


def import_folder(folder: Path, out: Path, task: str, language: str | None = None, held_out: float = 0.1,
                  seed: int = 0) -> dict:
    """Write train/validation/test manifests for `folder` into `out`; returns the report."""
    if task not in ("tts", "t2m", "v2m"):
        raise UniMoEError(f"task must be 'tts' (speech with transcripts), 't2m' (music with captions) or 'v2m' "
                          f"(videos with their music and captions), got {task!r}")
    if task == "tts" and language not in ("en", "zh"):
        raise UniMoEError(f"speech needs --language en or zh, got {language!r}")
    if not 0 <= held_out < 0.5:
        raise UniMoEError(f"held_out must be in [0, 0.5), got {held_out}")
    if not folder.is_dir():
        raise UniMoEError(f"not a folder: {folder}")
    _check_source_name(folder, out)
    suffixes = VIDEO_SUFFIXES if task == "v2m" else AUDIO_SUFFIXES
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
    if not files:
        raise UniMoEError(f"no {'video' if task == 'v2m' else 'audio'} files ({', '.join(sorted(suffixes))}) under {folder}")

    entries, skipped = [], []
    for path in files:
        rel = path.relative_to(folder)
        item_id = "-".join((folder.name, *rel.with_suffix("").parts))  # unique across imported folders
        video = None
        if task == "v2m":  # the video, with its music and caption beside it
            video, path = path, next((a for a in map(path.with_suffix, AUDIO_SUFFIXES) if a.is_file()), None)
            if path is None:
                skipped.append({"id": item_id, "reason": f"no audio file ({', '.join(AUDIO_SUFFIXES)}) named like {video.name}"})
                continue
            try:
                read_video(video, fps=1.0, size=8, max_seconds=3600)
            except UniMoEError as err:
                skipped.append({"id": item_id, "reason": str(err)})
                continue
        text_path = path.with_suffix(".txt")
        try:
            text = text_path.read_text(encoding="utf-8").strip() if text_path.is_file() else None
        except UnicodeDecodeError as err:
            skipped.append({"id": item_id, "reason": f"{text_path.name} is not UTF-8 text ({err.reason} at byte {err.start}); "
                                                      "save it as UTF-8"})
            continue
        if not text:
            skipped.append({"id": item_id, "reason": f"{'empty' if text_path.is_file() else 'no'} {text_path.name}"})
            continue
        try:
            wave, rate = load_audio(path)
        except UniMoEError as err:
            skipped.append({"id": item_id, "reason": str(err)})
            continue
        speech = task == "tts"
        entries.append({"id": item_id, "task": task, "group": group_of(task, language if speech else None),
                        "language": language if speech else None, "text": text if speech else None,
                        "caption": None if speech else text,
                        "speaker": (rel.parts[0] if len(rel.parts) > 1 else folder.name) if speech else None,
                        "audio": os.path.relpath(path.resolve(), out.resolve()), "duration": round(len(wave) / rate, 3),
                        "source": folder.name,
                        **({"video": os.path.relpath(video.resolve(), out.resolve())} if video is not None else {})})
    if not entries:
        raise UniMoEError(f"no usable items under {folder}: {len(skipped)} skipped, e.g. {skipped[0]['reason']}")

    random.Random(seed).shuffle(entries)
    for i, entry in enumerate(entries):
        entry["split"] = split_of(i, len(entries), held_out, minimum=0)
    if task == "tts":
        entries += clone_pairs(entries, CLONE_FRACTION, seed)
    for split in SPLITS:  # entries earlier imports brought from other folders stay
        if (out / f"{split}.jsonl").is_file():
            entries += [{**e, "split": split} for e in read_manifest(out / f"{split}.jsonl") if e.get("source") != folder.name]
    out.mkdir(parents=True, exist_ok=True)
    write_manifests(out, entries)
    report = make_report(entries, skipped, f"folder {folder.name}", seed)
    write_report(out, report)
    return report


def _check_source_name(folder: Path, out: Path) -> None:
    """A folder's entries are named after it: refuse a different folder of the same name, whose
    import would replace the first one's entries (re-importing the same folder replaces them)."""
    for split in SPLITS:
        manifest = out / f"{split}.jsonl"
        if not manifest.is_file():
            continue
        for e in read_manifest(manifest):
            audio = (out / e["audio"]).resolve()
            if e.get("source") == folder.name and not audio.is_relative_to(folder.resolve()):
                raise UniMoEError(f"{out} already holds a folder named {folder.name!r} (e.g. {audio}); "
                                  f"importing {folder} would replace its entries: rename one of the folders")
