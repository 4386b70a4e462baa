"""Music metrics: caption adherence (tempo, key, texture) and a Fréchet distance between clip sets.

No CLAP/PaSST-style model ships offline, so the Fréchet distance uses a small hand-made
embedding: for every 1-second window, the mean of 12 log-mel bands and of the 12 chroma bins
(24 dimensions). Windows, not whole clips, are the samples: a few clips give enough windows for
a 24×24 covariance. `benchmarks/frechet_check.py` shows it separates soundfonts.

Video-to-music: `video_beats` finds the moments a video pulses (where its frames brighten
sharply: the corpus videos' beat disc, data/videos.py), `beat_alignment` scores how well a clip's
beats fall on them (AIST++'s beat alignment score: mean over video beats of exp(-d²/2σ²), d the
distance to the nearest audio beat, σ = 0.1 s; 1 = every video beat has an audio beat on it).
"""

from __future__ import annotations

import re

import librosa
import numpy as np
from scipy import linalg

from unimoe_audio.errors import UniMoEError

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
FLATS = {"D flat": "C#", "E flat": "D#", "G flat": "F#", "A flat": "G#", "B flat": "A#", "C flat": "B", "F flat": "E"}
# Krumhansl-Kessler key profiles.
MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
RATE = 16_000
EMBED_DIM = 24


def estimate_tempo(wave: np.ndarray, sample_rate: int = RATE) -> float:
    """Global tempo in beats per minute from the onset-strength autocorrelation (0 for < 1 s)."""
    if len(wave) < sample_rate:
        return 0.0
    return float(librosa.feature.tempo(y=np.asarray(wave, np.float32), sr=sample_rate, hop_length=256)[0])


def tempo_matches(estimate: float, target: float, tolerance: float = 0.08) -> bool:
    """Within `tolerance` of the target, allowing the usual half/double-tempo ambiguity."""
    return any(abs(estimate * f - target) <= tolerance * target for f in (0.5, 1.0, 2.0))


def chroma(wave: np.ndarray, sample_rate: int = RATE) -> np.ndarray:
    return librosa.feature.chroma_stft(y=np.asarray(wave, np.float32), sr=sample_rate, n_fft=2048, hop_length=512)


def estimate_key(wave: np.ndarray, sample_rate: int = RATE) -> str:
    """'C major', 'A minor', … by correlating mean chroma with rotated key profiles."""
    profile = chroma(wave, sample_rate).mean(axis=1)
    best, best_score = "C major", -np.inf
    for tonic in range(12):
        for mode, template in (("major", MAJOR), ("minor", MINOR)):
            score = np.corrcoef(profile, np.roll(template, tonic))[0, 1]
            if np.isfinite(score) and score > best_score:
                best, best_score = f"{PITCH_CLASSES[tonic]} {mode}", score
    return best


def normalize_key(key: str) -> str:
    """'B flat major' / 'B- major' / 'Bb major' -> 'A# major'."""
    key = key.strip()
    for flat, sharp in FLATS.items():
        key = re.sub(rf"^{flat}\b", sharp, key)
    key = re.sub(r"^([A-G])(?:-|b)\s", lambda m: PITCH_CLASSES[(PITCH_CLASSES.index(m.group(1)) - 1) % 12] + " ", key)
    return key


def estimate_voices(wave: np.ndarray, sample_rate: int = RATE) -> float:
    """Mean number of strong pitch classes per frame: about 1-2 for a melody, 3+ for part writing."""
    c = chroma(wave, sample_rate)
    loud = c.max(axis=0) > 0
    if not loud.any():
        return 0.0
    return float((c[:, loud] >= 0.5).sum(axis=0).mean())


def is_solo(wave: np.ndarray, sample_rate: int = RATE, threshold: float = 2.5) -> bool:
    return estimate_voices(wave, sample_rate) < threshold


def embed_windows(wave: np.ndarray, sample_rate: int = RATE) -> np.ndarray:
    """[windows, 24]: per 1-s window, mean log-mel (12 bands) and mean chroma (12 bins)."""
    wave = np.asarray(wave, np.float32)
    hop = 512
    mel = np.log(librosa.feature.melspectrogram(y=wave, sr=sample_rate, n_fft=2048, hop_length=hop, n_mels=12) + 1e-6)
    ch = chroma(wave, sample_rate)
    n = min(mel.shape[1], ch.shape[1])
    per = max(1, sample_rate // hop)  # frames per second
    rows = [np.concatenate([mel[:, i:i + per].mean(1), ch[:, i:i + per].mean(1)])
            for i in range(0, n - per + 1, per)]
    return np.array(rows, dtype=np.float64).reshape(-1, EMBED_DIM)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to embeddings a [n, d] and b [m, d]."""
    if len(a) < 2 or len(b) < 2:
        raise UniMoEError("the Fréchet distance needs at least 2 embedding windows per set (clips of 2 s or more)")
    mu_a, mu_b = a.mean(0), b.mean(0)
    ridge = 1e-6 * np.eye(a.shape[1])  # keeps the square root defined when windows are few
    cov_a, cov_b = np.cov(a, rowvar=False) + ridge, np.cov(b, rowvar=False) + ridge
    covmean, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    covmean = covmean.real
    value = float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * covmean))
    return max(value, 0.0)


def set_embedding(waves: list[np.ndarray], sample_rate: int = RATE) -> np.ndarray:
    parts = [embed_windows(w, sample_rate) for w in waves]
    return np.concatenate(parts) if parts else np.zeros((0, EMBED_DIM))


BEAT_SIGMA_S = 0.1


def video_beats(frames: np.ndarray, fps: float) -> np.ndarray:
    """Times (s) where a video pulses: peaks of its mean brightening from one frame to the next.
    A frame shows what happened up to half a frame before it on average, hence the shift."""
    gray = np.asarray(frames, np.float32).mean(axis=-1)  # [T, H, W]
    if len(gray) < 3:
        return np.zeros(0)
    rise = np.concatenate([[0.0], np.maximum(gray[1:] - gray[:-1], 0).mean(axis=(1, 2))])
    if not rise.any():
        return np.zeros(0)
    # a peak: the largest rise within ±2 frames, clearly above the mean (the scrolling notes' steady motion)
    padded = np.pad(rise, 2)
    neighbourhood = np.lib.stride_tricks.sliding_window_view(padded, 5).max(axis=1)
    peaks = np.flatnonzero((rise == neighbourhood) & (rise > rise.mean() + 0.5 * rise.std()))
    return np.maximum(peaks / fps - 0.5 / fps, 0.0)


def audio_beats(wave: np.ndarray, sample_rate: int = RATE) -> np.ndarray:
    """Beat times (s) of a clip (librosa's beat tracker; none for < 1 s)."""
    if len(wave) < sample_rate:
        return np.zeros(0)
    return librosa.beat.beat_track(y=np.asarray(wave, np.float32), sr=sample_rate, hop_length=256, units="time")[1]


def beat_alignment(video: np.ndarray, audio: np.ndarray, sigma: float = BEAT_SIGMA_S) -> float | None:
    """Mean over video beats of exp(-d²/2σ²), d = distance to the nearest audio beat (0 if the audio
    has none); None when the video has no beats."""
    if len(video) == 0:
        return None
    if len(audio) == 0:
        return 0.0
    d = np.abs(np.asarray(video)[:, None] - np.asarray(audio)[None, :]).min(axis=1)
    return float(np.exp(-d ** 2 / (2 * sigma ** 2)).mean())
