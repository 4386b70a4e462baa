"""The package skeleton: atomic writes and the CLI's handling of user mistakes."""

import json

import pytest

from unimoe_audio.cli.main import main
from unimoe_audio.io import atomic_path, write_json


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
