"""Bring your own data: a plain folder of audio files and same-named .txt files becomes a corpus."""

import numpy as np
import pytest
import soundfile as sf

from unimoe_audio.codec import load_audio
from unimoe_audio.data import read_manifest
from unimoe_audio.data.folder import import_folder
from unimoe_audio.errors import UniMoEError


def _tone(path, seconds, rate=22_050):
    t = np.arange(int(seconds * rate)) / rate
    sf.write(str(path), 0.3 * np.sin(2 * np.pi * 220 * t), rate)


@pytest.fixture
def speech_folder(tmp_path):
    root = tmp_path / "my-voices"
    for speaker in ("alice", "bob"):
        (root / speaker).mkdir(parents=True)
        for n in range(5):
            _tone(root / speaker / f"{n}.wav", 0.5 + 0.1 * n)
            (root / speaker / f"{n}.txt").write_text(f"Sentence {n} of {speaker}.\n")
    _tone(root / "alice" / "untranscribed.wav", 0.5)
    _tone(root / "bob" / "blank.wav", 0.5)
    (root / "bob" / "blank.txt").write_text("  \n")
    (root / "bob" / "broken.wav").write_bytes(b"RIFF not really a wave file")
    (root / "bob" / "broken.txt").write_text("Never read.")
    return root


def test_speech_folder_becomes_a_corpus_with_splits_speakers_and_clone_pairs(speech_folder, tmp_path):
    out = tmp_path / "corpus"
    report = import_folder(speech_folder, out, "tts", "en", held_out=0.2, seed=1)
    reasons = {s["id"]: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"my-voices-alice-untranscribed", "my-voices-bob-blank", "my-voices-bob-broken"}
    assert "no untranscribed.txt" in reasons["my-voices-alice-untranscribed"]
    assert "empty blank.txt" in reasons["my-voices-bob-blank"] and "cannot read audio" in reasons["my-voices-bob-broken"] and "Skipped 3 items" in (out / "report.md").read_text()
    entries = [e for split in ("train", "validation", "test") for e in read_manifest(out / f"{split}.jsonl")]
    tts = [e for e in entries if e["task"] == "tts"]
    assert len(tts) == 10 and {e["speaker"] for e in tts} == {"alice", "bob"}
    assert len(read_manifest(out / "test.jsonl")) >= 2 and len(read_manifest(out / "validation.jsonl")) >= 2
    alice3 = next(e for e in tts if e["id"] == "my-voices-alice-3")
    assert alice3["text"] == "Sentence 3 of alice." and alice3["duration"] == pytest.approx(0.8, abs=1e-3)
    wave, rate = load_audio(out / alice3["audio"], 16_000)  # paths resolve from the corpus folder
    assert rate == 16_000 and len(wave) == pytest.approx(0.8 * 16_000, abs=2)
    clones = [e for e in entries if e["task"] == "clone"]
    assert clones and all(e["prompt_audio"] != e["audio"] and e["prompt_audio"].split("/")[-2] == e["speaker"]
                          for e in clones)

    music = tmp_path / "tunes"
    music.mkdir()
    for n in range(3):
        _tone(music / f"{n}.wav", 1.0)
        (music / f"{n}.txt").write_text("A slow folk tune.")
    import_folder(music, out, "t2m", held_out=0.0)  # a second folder joins the same corpus
    train = read_manifest(out / "train.jsonl")
    assert {e["source"] for e in train} == {"my-voices", "tunes"}
    assert len([e for e in train if e["task"] == "t2m"]) == 3


def test_music_folder_uses_captions_and_bad_requests_are_named(tmp_path):
    root = tmp_path / "tunes"
    root.mkdir()
    for n in range(4):
        _tone(root / f"t{n}.flac", 1.0)
        (root / f"t{n}.txt").write_text(f"A calm piano piece at {60 + n} BPM.")
    report = import_folder(root, tmp_path / "c", "t2m", held_out=0.25)
    entries = [e for split in ("train", "validation", "test") for e in read_manifest(tmp_path / "c" / f"{split}.jsonl")]
    assert report["items"] == 4 and all(e["group"] == "music" and "BPM" in e["caption"] and e["text"] is None
                                        for e in entries)
    import_folder(root, tmp_path / "c", "t2m", held_out=0.25)  # importing the same folder again replaces its entries
    assert len([e for split in ("train", "validation", "test") for e in read_manifest(tmp_path / "c" / f"{split}.jsonl")]) == 4
    with pytest.raises(UniMoEError, match="needs --language"):
        import_folder(root, tmp_path / "x", "tts")
    with pytest.raises(UniMoEError, match="no audio files"):
        import_folder(tmp_path / "c", tmp_path / "x", "t2m")
    with pytest.raises(UniMoEError, match="not a folder"):
        import_folder(tmp_path / "missing", tmp_path / "x", "t2m")


def test_a_transcript_that_is_not_utf8_is_skipped_with_the_reason(speech_folder, tmp_path):
    (speech_folder / "alice" / "0.txt").write_bytes("Caf\xe9 au lait.".encode("latin-1"))
    report = import_folder(speech_folder, tmp_path / "corpus", "tts", "en")
    reasons = {s["id"]: s["reason"] for s in report["skipped"]}
    assert "0.txt is not UTF-8 text" in reasons["my-voices-alice-0"]
    entries = [e for split in ("train", "validation", "test") for e in read_manifest(tmp_path / "corpus" / f"{split}.jsonl")]
    assert not any("\ufffd" in (e["text"] or "") for e in entries)


def test_a_second_folder_of_the_same_name_does_not_replace_the_first(speech_folder, tmp_path):
    out = tmp_path / "corpus"
    import_folder(speech_folder, out, "tts", "en")
    before = {split: (out / f"{split}.jsonl").read_text() for split in ("train", "validation", "test")}
    twin = tmp_path / "elsewhere" / speech_folder.name
    (twin / "carol").mkdir(parents=True)
    for n in range(3):
        _tone(twin / "carol" / f"{n}.wav", 0.5)
        (twin / "carol" / f"{n}.txt").write_text(f"Carol says {n}.")
    with pytest.raises(UniMoEError, match="already holds a folder named 'my-voices'.*rename one of the folders"):
        import_folder(twin, out, "tts", "en")
    assert {split: (out / f"{split}.jsonl").read_text() for split in before} == before
    import_folder(speech_folder, out, "tts", "en")  # re-importing the same folder still replaces its entries


def test_a_folder_of_videos_with_their_music_and_captions_becomes_v2m_items(tmp_path):
    from unimoe_audio.video import write_video

    root = tmp_path / "clips"
    root.mkdir()
    for n in range(4):
        write_video(root / f"c{n}.mp4", np.full((8, 16, 16, 3), 40 * n, np.uint8), fps=8)
        _tone(root / f"c{n}.wav", 1.0)
        (root / f"c{n}.txt").write_text("Music for this video.")
    write_video(root / "silent.mp4", np.zeros((8, 16, 16, 3), np.uint8), fps=8)  # no audio beside it
    (root / "broken.mp4").write_bytes(b"not a video")
    _tone(root / "broken.wav", 1.0)
    (root / "broken.txt").write_text("Never read.")
    report = import_folder(root, tmp_path / "c", "v2m", held_out=0.25)
    entries = [e for split in ("train", "validation", "test") for e in read_manifest(tmp_path / "c" / f"{split}.jsonl")]
    assert report["items"] == 4 and all(e["task"] == e["group"] == "v2m" and e["language"] is None for e in entries)
    assert all((tmp_path / "c" / e["video"]).is_file() and (tmp_path / "c" / e["audio"]).suffix == ".wav" for e in entries)
    reasons = {s["id"]: s["reason"] for s in report["skipped"]}
    assert "no audio file" in reasons["clips-silent"] and "cannot read the video" in reasons["clips-broken"]
