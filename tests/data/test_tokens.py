"""Token shards: a bad item is left out, and a shard is re-encoded whenever what made it changed."""

import json
import shutil

import numpy as np
import soundfile as sf
import torch

from unimoe_audio.codec import SpectralCodec, load_codec
from unimoe_audio.data import TokenDataset, encode_corpus, read_manifest


def _small_corpus(corpus, root):
    """Two music items of the test corpus and one of 300 samples (longer than 64, shorter than the STFT window)."""
    (root / "audio").mkdir(parents=True)
    entries = [e for e in read_manifest(corpus / "train.jsonl") if e["task"] == "t2m"][:2]
    for e in entries:
        shutil.copy(corpus / e["audio"], root / e["audio"])
    sf.write(root / "audio" / "blip.wav", np.full(300, 0.1, np.float32), 16_000)
    entries.append({**entries[0], "id": "blip", "audio": "audio/blip.wav"})
    for split in ("train", "validation", "test"):
        (root / f"{split}.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    return entries


def test_audio_too_short_for_the_codec_is_left_out_not_fatal(corpus, tmp_path, capsys):
    _small_corpus(corpus, tmp_path)
    assert encode_corpus(tmp_path, load_codec(corpus / "codec"), splits=("train",), progress=False) == {"train": 2}
    info = json.loads((tmp_path / "tokens" / "train" / "info.json").read_text())
    assert [s["id"] for s in info["skipped"]] == ["blip"] and "analysis window" in info["skipped"][0]["reason"]
    assert "left out 1 items" in capsys.readouterr().err


def test_shards_are_encoded_again_for_another_codec_a_changed_manifest_or_a_corrupt_info(corpus, tmp_path, capsys):
    entries = _small_corpus(corpus, tmp_path)
    codec = load_codec(corpus / "codec")
    encode_corpus(tmp_path, codec, splits=("train",), progress=False)
    codes = tmp_path / "tokens" / "train" / "codes.npy"

    def encoded_again(codec) -> bool:
        stamp = codes.stat().st_mtime_ns
        encode_corpus(tmp_path, codec, splits=("train",), progress=False)
        return codes.stat().st_mtime_ns != stamp

    assert not encoded_again(codec)  # nothing changed: the shard is kept
    # Same type and shape, other weights: the old codes would be read as this codec's.
    other = SpectralCodec(codec.config, codec.mean, codec.std, codec.codebooks.flip(1))
    assert other.fingerprint() != codec.fingerprint() and encoded_again(other)
    assert torch.equal(TokenDataset(tmp_path / "tokens", "train")[0].codes,
                       other.encode(*sf.read(tmp_path / entries[0]["audio"], dtype="float32"))[0])
    manifest = tmp_path / "train.jsonl"  # the same number of items, one caption changed
    manifest.write_text(manifest.read_text().replace(entries[1]["caption"], "a new caption"))
    assert encoded_again(other)
    assert TokenDataset(tmp_path / "tokens", "train")[1].meta["caption"] == "a new caption"
    (tmp_path / "tokens" / "train" / "info.json").write_text('{"codec_type": "spec')
    assert encoded_again(other) and "info.json is corrupt" in capsys.readouterr().err


def test_videos_are_cached_with_the_tokens_and_a_corpus_without_them_keeps_its_shards(corpus, video_corpus):
    from unimoe_audio.data.tokens import VIDEO_FPS, VIDEO_SIZE

    info = json.loads((video_corpus / "tokens" / "train" / "info.json").read_text())
    assert (info["video_fps"], info["video_size"], info["frame_rate"]) == (VIDEO_FPS, VIDEO_SIZE, 50.0)
    data = TokenDataset(video_corpus / "tokens", "train")
    v2m = [data[i] for i, g in enumerate(data.groups) if g == "v2m"]
    assert len(v2m) == 3 and all(ex.video.shape == (20, VIDEO_SIZE, VIDEO_SIZE, 3) for ex in v2m)  # 2.5 s at 8 frames/s
    assert all(ex.video_step == 50.0 / VIDEO_FPS and ex.codes.shape[1] >= 120 for ex in v2m)
    assert all(data[i].video is None for i, g in enumerate(data.groups) if g != "v2m")
    plain = json.loads((corpus / "tokens" / "train" / "info.json").read_text())
    assert not {"video_fps", "video_size", "frame_rate"} & set(plain) and not (corpus / "tokens" / "train" / "video.npy").exists()
