"""The package skeleton: atomic writes and the CLI's handling of user mistakes."""

import json

import pytest

from unimoe_audio.cli.main import main
from unimoe_audio.errors import UniMoEError
from unimoe_audio.io import atomic_path, read_json, write_json


def test_atomic_path_keeps_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "checkpoint.json"
    write_json(target, {"step": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-written")
            raise RuntimeError("disk full")
    assert json.loads(target.read_text()) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.json"]


def test_write_json_replaces_content(tmp_path):
    target = tmp_path / "nested" / "report.json"
    write_json(target, {"a": 1})
    write_json(target, {"a": 2, "text": "普通话"})
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": 2, "text": "普通话"}


def test_cli_without_command_prints_help(capsys):
    assert main([]) == 1
    assert "unimoe-audio" in capsys.readouterr().out


def test_an_unwritable_folder_is_one_line_naming_the_path(corpus, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    wav = corpus / "audio" / "music-train-0.wav"
    assert main(["codec", "encode", "--codec", str(corpus / "codec"), str(wav), "-o", str(blocker / "codes.npy")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot write {blocker / 'codes.npy'}" in err and "Traceback" not in err


def test_a_full_disk_is_a_user_error_naming_the_path(tmp_path, monkeypatch):
    import errno

    import unimoe_audio.io as io

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.tempfile, "mkstemp", full)
    with pytest.raises(UniMoEError, match=f"cannot write {tmp_path / 'report.json'}: No space left"):
        write_json(tmp_path / "report.json", {"a": 1})


def test_a_corrupt_rebuildable_json_file_is_read_as_missing_with_a_warning(tmp_path, capsys):
    path = tmp_path / "cache.json"
    path.write_text('{"whisper": "the cat')
    assert read_json(path, "computing it again") is None
    assert "corrupt" in capsys.readouterr().err and read_json(tmp_path / "none.json", "") is None


def test_reading_a_corpus_does_not_load_the_corpus_builder():
    import subprocess
    import sys

    code = "import sys, unimoe_audio.model, unimoe_audio.train.trainer; print('unimoe_audio.data.build' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
