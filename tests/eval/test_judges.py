"""Offline judges and error rates on inputs with known answers."""

import subprocess

import numpy as np
import pytest

from unimoe_audio.codec import load_audio
from unimoe_audio.eval.judges import SpeakerJudge, SphinxJudge, WhisperJudge, whisper_model_dir
from unimoe_audio.eval.spectral import multi_resolution_stft_distance
from unimoe_audio.eval.text import char_error_rate, normalize_text, word_error_rate

TEXT = "Your supervisor is thinking about you."


@pytest.fixture(scope="module")
def flite_wave(tmp_path_factory):
    path = tmp_path_factory.mktemp("judge") / "s.wav"
    subprocess.run(["flite", "-voice", "slt", "-t", TEXT, "-o", str(path)], check=True)
    return load_audio(path, 16_000)


def test_error_rates_known_answers():
    assert word_error_rate(["Hello, world!"], ["hello world"]) == 0.0
    assert word_error_rate(["a b c d"], ["a x c"]) == pytest.approx(0.5)
    assert char_error_rate(["今天天气很好"], ["今天天汽很好"]) == pytest.approx(1 / 6)
    assert char_error_rate(["何草不黃"], ["何草不黄"]) == 0.0  # Traditional and Simplified forms are the same characters
    assert normalize_text("Don't  STOP.") == "don't stop"


def test_whisper_model_is_assembled_and_transcribes(flite_wave):
    assert (whisper_model_dir() / "model.bin").stat().st_size > 100_000_000
    hyp = WhisperJudge().transcribe(*flite_wave, language="en")
    assert word_error_rate([TEXT], [hyp]) < 0.2, hyp


def test_sphinx_hears_something_close(flite_wave):
    hyp = SphinxJudge().transcribe(*flite_wave)
    assert word_error_rate([TEXT], [hyp]) < 0.7, hyp


def test_speaker_similarity_self_is_one_and_noise_is_lower(flite_wave):
    judge = SpeakerJudge()
    wave, rate = flite_wave
    assert judge.similarity(wave, rate, wave, rate) == pytest.approx(1.0, abs=1e-4)
    noise = np.random.default_rng(0).normal(0, 0.1, len(wave)).astype(np.float32)
    assert judge.similarity(wave, rate, noise, rate) < 0.9


def test_spectral_distance_zero_for_identical():
    x = np.random.default_rng(1).normal(size=8000).astype(np.float32)
    assert multi_resolution_stft_distance(x, x, 16_000) == pytest.approx(0.0, abs=1e-6)
    assert multi_resolution_stft_distance(x, 0.5 * x, 16_000) > 0.1
