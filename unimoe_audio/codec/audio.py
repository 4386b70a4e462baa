"""Reading, validating, downmixing and resampling waveforms; writing wav files atomically."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr
import torch

from unimoe_audio.errors import UniMoEError
from unimoe_audio.io import atomic_path

MIN_SAMPLES = 64
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif")  # what libsndfile reads


def _to_float(wave: np.ndarray) -> np.ndarray:
    if np.issubdtype(wave.dtype, np.integer):
        return wave.astype(np.float32) / float(np.iinfo(wave.dtype).max + 1)
    return wave.astype(np.float32, copy=False)


def resample(wave: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """Resample along the last axis with soxr (high quality)."""
    if sample_rate == target_rate:
        return wave
    if wave.ndim == 1:
        return soxr.resample(wave, sample_rate, target_rate).astype(np.float32)
    # soxr takes [T, C]: resample all rows in one call.
    return soxr.resample(wave.T, sample_rate, target_rate).T.astype(np.float32).copy()


def load_audio(source: str | Path | BinaryIO, sample_rate: int | None = None,
               name: str | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file (a path, or an open binary file called `name` in messages) as mono
    float32 [T], resampled to `sample_rate` when given."""
    if isinstance(source, (str, Path)):
        name = Path(source)
        if not name.is_file():
            raise UniMoEError(f"audio file not found: {name}")
        source = str(name)
    try:
        wave, rate = sf.read(source, dtype="float32", always_2d=True)  # [T, C]
    except (RuntimeError, sf.LibsndfileError) as err:
        raise UniMoEError(f"cannot read audio file {name}: {err}") from None
    wave = wave.mean(axis=1)
    _check_samples(wave, str(name))
    if sample_rate is not None:
        wave, rate = resample(wave, rate, sample_rate), sample_rate
    return wave, rate


def _check_samples(wave: np.ndarray, what: str) -> None:
    if wave.shape[-1] < MIN_SAMPLES:
        raise UniMoEError(f"{what}: audio is empty or too short ({wave.shape[-1]} samples; need at least {MIN_SAMPLES})")
    if not np.isfinite(wave).all():
        raise UniMoEError(f"{what}: audio contains NaN or infinite samples")


MAX_CHANNELS = 8


def mono(wave) -> np.ndarray:
    """One recording -> mono float32 [T]: [T], soundfile's [T, C] or torch's [C, T] layout
    (the channel axis is the short one, at most MAX_CHANNELS), float or integer PCM."""
    if isinstance(wave, torch.Tensor):
        wave = wave.detach().cpu().numpy()
    wave = np.asarray(wave)
    if not (np.issubdtype(wave.dtype, np.floating) or np.issubdtype(wave.dtype, np.integer)) or wave.dtype == np.bool_:
        raise UniMoEError(f"waveform must hold float or integer PCM samples, got dtype {wave.dtype}")
    wave = _to_float(wave)
    if wave.ndim == 2 and min(wave.shape) <= MAX_CHANNELS and max(wave.shape) > MAX_CHANNELS:
        wave = wave.mean(axis=int(np.argmin(wave.shape)))
    if wave.ndim != 1:
        raise UniMoEError(f"one recording must be [samples], [samples, channels] or [channels, samples] with at most "
                          f"{MAX_CHANNELS} channels; got shape {list(wave.shape)}")
    return wave


def prepare_wave(wave, sample_rate: int, target_rate: int) -> torch.Tensor:
    """Any waveform -> mono float32 [B, T] at `target_rate`.

    Accepts numpy or torch, [T], [B, T] or [B, C, T], float or integer PCM (scaled to [-1, 1]).
    """
    if isinstance(wave, torch.Tensor):
        wave = wave.detach().cpu().numpy()
    wave = np.asarray(wave)
    if wave.dtype == np.bool_ or not (np.issubdtype(wave.dtype, np.floating) or np.issubdtype(wave.dtype, np.integer)):
        raise UniMoEError(f"waveform must hold float or integer PCM samples, got dtype {wave.dtype}")
    if sample_rate is None or int(sample_rate) <= 0:
        raise UniMoEError(f"sample_rate must be a positive integer, got {sample_rate}")
    wave = _to_float(wave)
    if wave.ndim == 1:
        wave = wave[None]
    elif wave.ndim == 3:
        wave = wave.mean(axis=1)
    elif wave.ndim != 2:
        raise UniMoEError(f"waveform must be [T], [B, T] or [B, C, T], got shape {list(wave.shape)}")
    _check_samples(wave, "waveform")
    return torch.from_numpy(np.ascontiguousarray(resample(wave, int(sample_rate), target_rate)))


def save_audio(path: str | Path, wave, sample_rate: int) -> Path:
    """Write mono 16-bit PCM wav atomically; `wave` is [T] (or [1, T]) float in [-1, 1]."""
    if isinstance(wave, torch.Tensor):
        wave = wave.detach().cpu().numpy()
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    if not np.isfinite(wave).all():
        raise UniMoEError(f"refusing to write {path}: waveform contains NaN or infinite samples")
    path = Path(path)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.clip(wave, -1.0, 1.0), int(sample_rate), subtype="PCM_16", format="WAV")
    return path
