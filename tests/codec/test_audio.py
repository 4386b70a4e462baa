"""Audio helpers: any PCM layout in, mono float at the target rate out; bad audio refused."""

import numpy as np
import pytest
import soundfile as sf
import torch

from unimoe_audio.codec import load_audio, mono, prepare_wave, save_audio
from unimoe_audio.errors import UniMoEError


def test_prepare_wave_downmixes_scales_and_resamples():
    t = np.arange(44_100) / 44_100
    tone = (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    stereo = np.stack([tone, tone])[None]  # [1, 2, T] int16
    out = prepare_wave(stereo, 44_100, 16_000)
    assert out.shape == (1, 16_000) and out.dtype == torch.float32
    assert abs(out.abs().max().item() - 0.5) < 0.02


@pytest.mark.parametrize("bad, match", [
    (np.zeros(10, dtype=np.float32), "too short"),
    (np.full(1000, np.nan, dtype=np.float32), "NaN"),
    (np.zeros((1, 1, 1, 100), dtype=np.float32), "must be"),
])
def test_prepare_wave_rejects_bad_audio(bad, match):
    with pytest.raises(UniMoEError, match=match):
        prepare_wave(bad, 16_000, 16_000)


def test_save_and_load_round_trip(tmp_path):
    wave = 0.3 * np.sin(np.linspace(0, 200, 8000)).astype(np.float32)
    path = save_audio(tmp_path / "a.wav", wave, 8000)
    back, rate = load_audio(path, 16_000)
    assert rate == 16_000 and abs(len(back) - 16_000) <= 1
    assert sf.info(str(path)).subtype == "PCM_16"


def test_unreadable_and_truncated_files_raise(tmp_path):
    with pytest.raises(UniMoEError, match="not found"):
        load_audio(tmp_path / "missing.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00")
    with pytest.raises(UniMoEError, match="cannot read"):
        load_audio(junk)


def test_one_recording_in_any_channel_layout_becomes_mono():
    t = np.arange(16_000) / 16_000
    left, right = np.sin(2 * np.pi * 220 * t), 0.5 * np.sin(2 * np.pi * 330 * t)
    expected = ((left + right) / 2).astype(np.float32)
    np.testing.assert_allclose(mono(np.stack([left, right], axis=1)), expected, atol=1e-6)  # soundfile's [T, C]
    np.testing.assert_allclose(mono(torch.from_numpy(np.stack([left, right]))), expected, atol=1e-6)  # torch's [C, T]
    with pytest.raises(UniMoEError, match="at most 8 channels"):
        mono(np.zeros((100, 100)))
