"""The manifest schema: hand-written manifests are checked line by line before any work starts."""

import json

import pytest

from unimoe_audio.data import check_entry, read_manifest
from unimoe_audio.errors import UniMoEError

GOOD = {"id": "a", "task": "tts", "group": "speech-en", "language": "en", "text": "Hi.", "speaker": "s", "audio": "a.wav"}


@pytest.mark.parametrize("change, message", [
    ({"id": None}, "has no id"),
    ({"audio": ""}, "has no audio"),
    ({"task": None, "group": None}, "has no task, group"),
    ({"task": "speak"}, "unknown task 'speak'"),
    ({"group": "speech-fr"}, "unknown group 'speech-fr'"),
    ({"group": "speech-zh"}, "belongs to group 'speech-en', not 'speech-zh'"),
    ({"language": "fr"}, "needs language en or zh"),
    ({"task": "t2m", "group": "music", "caption": "a jig"}, "music has none"),
    ({"text": "  "}, "needs a non-empty text"),
    ({"task": "clone"}, "needs a non-empty prompt_audio, prompt_text"),
    ({"task": "v2m", "group": "v2m", "language": None, "caption": "music for it"}, "needs a non-empty video"),
    ({"task": "v2m", "group": "music", "language": None, "caption": "a", "video": "v.mp4"}, "belongs to group 'v2m'"),
])
def test_a_bad_entry_is_refused_naming_file_and_line(tmp_path, change, message):
    manifest = tmp_path / "train.jsonl"
    good = json.dumps(GOOD)
    manifest.write_text(good.replace('"a"', '"b"', 1) + "\n\n" + json.dumps({**GOOD, **change}) + "\n")
    with pytest.raises(UniMoEError, match=f"{manifest}:3: .*{message}"):
        read_manifest(manifest)


def test_good_entries_and_duplicate_ids(tmp_path):
    music = {"id": "m", "task": "t2m", "group": "music", "language": None, "caption": "a jig", "audio": "m.wav"}
    assert check_entry(music, "x") is music
    manifest = tmp_path / "test.jsonl"
    manifest.write_text(json.dumps(GOOD) + "\n" + json.dumps(music) + "\n")
    assert [e["id"] for e in read_manifest(manifest)] == ["a", "m"]
    manifest.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n")
    with pytest.raises(UniMoEError, match="test.jsonl:2: id 'a' was already used on line 1"):
        read_manifest(manifest)
    manifest.write_text("[1, 2]\n")
    with pytest.raises(UniMoEError, match="must be a JSON object"):
        read_manifest(manifest)
