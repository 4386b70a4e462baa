"""The corpus format: splits, task groups, the fields of a manifest entry, and reading a manifest.

A corpus folder holds train.jsonl, validation.jsonl and test.jsonl, one entry per line:

    every entry   id, task (tts | clone | t2m | v2m), group (speech-en | speech-zh | music | v2m),
                  audio (path relative to the corpus folder); optional duration, source, licence
    tts, clone    language (en | zh; the group is speech-<language>), text, speaker
    clone         prompt_audio, prompt_text (another utterance of the same speaker)
    t2m           language null, caption; optional bpm, key, metre, parts, instruments, piece
    v2m           as t2m, plus video (path relative to the corpus folder): music for that video;
                  the built corpus's v2m captions leave tempo and key to the video

Task groups are listed in the order their task ids were given (`TASK_GROUPS.index`): a new group
is appended, so a model trained before it existed keeps its ids.

`read_manifest` checks every line and names the file and line of the first bad one, so a
hand-written manifest is refused before any encoding or training starts.
"""

from __future__ import annotations

import json
from pathlib import Path

from unimoe_audio.errors import UniMoEError

SPLITS = ("train", "validation", "test")
TASK_GROUPS = ("speech-en", "speech-zh", "music", "v2m")
TASKS = ("tts", "clone", "t2m", "v2m")
MUSIC_TASKS = ("t2m", "v2m")  # no language; a caption
LANGUAGES = ("en", "zh")
REQUIRED = {"tts": ("text", "speaker"), "clone": ("text", "prompt_audio", "prompt_text"), "t2m": ("caption",),
            "v2m": ("caption", "video")}


def group_of(task: str, language: str | None) -> str:
    """The task group of an entry: its language's speech group, music, or v2m."""
    return {"t2m": "music", "v2m": "v2m"}.get(task, f"speech-{language}")


def check_entry(entry, where: str) -> dict:
    """`entry` if it is a valid manifest entry; otherwise UniMoEError starting with `where`."""
    if not isinstance(entry, dict):
        raise UniMoEError(f"{where}: a manifest line must be a JSON object, got {type(entry).__name__}")
    missing = [k for k in ("id", "task", "group", "audio") if not entry.get(k)]
    if missing:
        raise UniMoEError(f"{where}: entry {entry.get('id', '?')!r} has no {', '.join(missing)}")
    task, group, language = entry["task"], entry["group"], entry.get("language")
    if task not in TASKS:
        raise UniMoEError(f"{where}: unknown task {task!r}; one of {', '.join(TASKS)}")
    if group not in TASK_GROUPS:
        raise UniMoEError(f"{where}: unknown group {group!r}; one of {', '.join(TASK_GROUPS)}")
    if task not in MUSIC_TASKS and language not in LANGUAGES:
        raise UniMoEError(f"{where}: {task} entry {entry['id']!r} needs language en or zh, got {language!r}")
    if task in MUSIC_TASKS and language is not None:
        raise UniMoEError(f"{where}: music entry {entry['id']!r} has language {language!r}; music has none (null)")
    if group != group_of(task, language):
        raise UniMoEError(f"{where}: entry {entry['id']!r} ({task}, language {language}) belongs to group "
                          f"{group_of(task, language)!r}, not {group!r}")
    empty = [k for k in REQUIRED[task] if not isinstance(entry.get(k), str) or not entry[k].strip()]
    if empty:
        raise UniMoEError(f"{where}: {task} entry {entry['id']!r} needs a non-empty {', '.join(empty)}")
    return entry


def read_manifest(path: Path) -> list[dict]:
    """The entries of a manifest (or a token index), each checked; errors name `path:line`."""
    path = Path(path)
    if not path.is_file():
        raise UniMoEError(f"manifest not found: {path} (build the corpus with `unimoe-audio data build`)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise UniMoEError(f"{path} is not UTF-8 text ({err})") from None
    entries, seen = [], {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = check_entry(json.loads(line), f"{path}:{n}")
        except json.JSONDecodeError as err:
            raise UniMoEError(f"{path}:{n}: not valid JSON ({err})") from None
        if entry["id"] in seen:
            raise UniMoEError(f"{path}:{n}: id {entry['id']!r} was already used on line {seen[entry['id']]}")
        seen[entry["id"]] = n
        entries.append(entry)
    return entries
