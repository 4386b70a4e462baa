"""Spectral views of audio: the multi-resolution STFT distance (log-magnitude L1 plus spectral
convergence, averaged over resolutions) and mel-spectrogram plots."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from unimoe_audio.io import save_figure

FFT_SIZES = (512, 1024, 2048)


def multi_resolution_stft_distance(ref, est, sample_rate: int, fft_sizes=FFT_SIZES) -> float:
    """Distance between two mono waveforms at `sample_rate` (0 for identical signals).

    Both are cut to the shorter length. Per FFT size n (hop n/4): mean |log|S_ref| - log|S_est||
    plus ||S_ref| - |S_est||_F / ||S_ref||_F; the result averages over sizes.
    """
    ref = torch.as_tensor(np.asarray(ref, dtype=np.float32)).reshape(-1)
    est = torch.as_tensor(np.asarray(est, dtype=np.float32)).reshape(-1)
    n = min(len(ref), len(est))
    ref, est = ref[:n], est[:n]
    total = 0.0
    for size in fft_sizes:
        window = torch.hann_window(size)
        mags = [torch.stft(x, size, size // 4, window=window, return_complex=True).abs() for x in (ref, est)]
        log_l1 = (torch.log(mags[0] + 1e-5) - torch.log(mags[1] + 1e-5)).abs().mean()
        convergence = torch.linalg.norm(mags[0] - mags[1]) / torch.linalg.norm(mags[0]).clamp_min(1e-8)
        total += float(log_l1 + convergence)
    return total / len(fft_sizes)


def plot_spectrograms(clips: dict[str, tuple[np.ndarray, int]], titles: dict[str, str],
                      out: str | Path | BinaryIO) -> None:
    """One 80-bin mel spectrogram per clip (name -> (wave, sample_rate)), stacked, as a PNG written
    to `out` (a path, written atomically, or a binary file)."""
    import librosa
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(clips), 1, figsize=(9, 2.6 * len(clips)))
    for ax, (name, (wave, rate)) in zip(np.atleast_1d(axes), clips.items()):
        mel = librosa.power_to_db(librosa.feature.melspectrogram(y=wave, sr=rate, n_mels=80) + 1e-10, ref=np.max)
        ax.imshow(mel, origin="lower", aspect="auto", extent=(0, len(wave) / rate, 0, 80), cmap="magma")
        ax.set(title=f"{name}: {titles[name][:90]}", xlabel="seconds", ylabel="mel bin")
    save_figure(fig, out, dpi=100)
