"""The built-in codec: log-mel frames, residual k-means quantisation, Griffin-Lim decoding.

Trains on a CPU in minutes from the project's own audio. Frames are 50 per second at 16 kHz
(hop 320, as the paper's DAC); each frame's normalised log-mel vector is quantised by K
codebooks learnt with k-means, either residual (stage k clusters what stages < k left over) or
by bands (codebook k clusters the k-th of K equal runs of mel bins, zero elsewhere; no code
depends on another's rounding, so every codebook is a coarse, predictable description of its
band). Encoding is the same greedy loop for both (a band code's zeros leave the other bins'
distances equal). Decoding sums the code vectors, maps mel back to a linear magnitude
spectrogram and recovers phase with fast (momentum) Griffin-Lim. Being a sum, it also decodes a
distribution over each code (`decode_expected`): the expected vectors, a model's mean prediction
of the mel frame rather than one draw from it (docs/pretrained.md, session 10). A trained codec
can grow (`extended`): more codes per codebook learnt on audio it codes badly, its own codes
unchanged, so a model trained on them goes on with the grown codec (train/warm_start.py).

`frames_per_step` r > 1 stacks r consecutive mel frames into one code step (Tacotron's reduction
factor for codec tokens): a step holds K·r codes, codebook k of frame j at index k·r + j, at
50 / r steps per second, so a model predicts r frames at once and has less to copy from the step
before; the mel resolution, and so the round trip, stays that of 50 frames/s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Iterable

import librosa
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from unimoe_audio.codec.audio import load_audio, prepare_wave
from unimoe_audio.codec.base import Codec
from unimoe_audio.errors import UniMoEError
from unimoe_audio.io import atomic_path, read_config, write_json

LOG_FLOOR = 1e-5
QUANTIZERS = ("residual", "bands")


@dataclass
class SpectralCodecConfig:
    sample_rate: int = 16_000
    hop_length: int = 320  # 50 frames/s
    n_fft: int = 1024
    n_mels: int = 128
    num_codebooks: int = 12
    codebook_size: int = 1024
    griffin_lim_iters: int = 32
    griffin_lim_momentum: float = 0.99
    kmeans_iters: int = 12
    seed: int = 0
    quantizer: str = "residual"  # or "bands" (see the module docstring)
    frames_per_step: int = 1  # mel frames stacked into one code step (see the module docstring)

    def __post_init__(self) -> None:
        if self.num_codebooks < 1 or self.codebook_size < 2:
            raise UniMoEError("SpectralCodecConfig needs num_codebooks >= 1 and codebook_size >= 2")
        if self.frames_per_step < 1:
            raise UniMoEError(f"frames_per_step must be at least 1, got {self.frames_per_step}")
        if self.hop_length <= 0 or self.n_fft < self.hop_length:
            raise UniMoEError("SpectralCodecConfig needs 0 < hop_length <= n_fft")
        if self.quantizer not in QUANTIZERS:
            raise UniMoEError(f"quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}")
        if self.quantizer == "bands" and self.n_mels < self.num_codebooks:
            raise UniMoEError(f"a band quantizer needs at least one mel bin per codebook: n_mels {self.n_mels} < "
                              f"num_codebooks {self.num_codebooks}")


class SpectralCodec(Codec):
    codec_type = "spectral-rvq"
    decodes_expected = True

    def __init__(self, config: SpectralCodecConfig, mean: torch.Tensor, std: torch.Tensor, codebooks: torch.Tensor):
        self.config = config
        self.sample_rate = config.sample_rate
        self.frame_rate = config.sample_rate / config.hop_length / config.frames_per_step
        self.num_codebooks = config.num_codebooks * config.frames_per_step
        self.codebook_size = config.codebook_size
        self.mean, self.std = mean.float(), std.float()  # [M]
        self.codebooks = codebooks.float()  # [K, C, M]
        mel = librosa.filters.mel(sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels)
        self.mel_basis = torch.from_numpy(mel).float()  # [M, F]
        self.mel_inverse = torch.linalg.pinv(self.mel_basis)  # [F, M]
        self.window = torch.hann_window(config.n_fft)

    # -- features ---------------------------------------------------------------------------
    def features(self, wave, sample_rate: int) -> torch.Tensor:
        """Normalised log-mel frames [B, T, M] of any waveform."""
        x = prepare_wave(wave, sample_rate, self.sample_rate)  # [B, S]
        return (log_mel(x, self.config, self.mel_basis, self.window) - self.mean) / self.std

    # -- codec ------------------------------------------------------------------------------
    @property
    def delays(self) -> tuple[int, ...]:
        """Residual codes refine one another, so level k waits k steps for the coarser ones (each
        level's N stacked codes alike). Band codes do not depend on one another: all at delay 0,
        so one step's reading of the text serves every code of the frames it predicts
        (docs/pretrained.md, session 8: the text is worth 4-6x more to the model)."""
        c = self.config
        if c.quantizer == "bands":
            return (0,) * self.num_codebooks
        if c.frames_per_step == 1:
            return super().delays
        return tuple(k for k in range(c.num_codebooks) for _ in range(c.frames_per_step))

    @torch.no_grad()
    def encode(self, wave, sample_rate: int) -> torch.Tensor:
        residual = self.features(wave, sample_rate)  # [B, T, M]
        r = self.config.frames_per_step
        short = -residual.shape[1] % r  # the last step is completed with copies of the last frame
        residual = torch.cat([residual, residual[:, -1:].expand(-1, short, -1)], dim=1)
        b, t, m = residual.shape
        residual = residual.reshape(-1, m)
        codes = []
        for book in self.codebooks:  # [C, M]
            idx = nearest(residual, book)
            residual = residual - book[idx]
            codes.append(idx)
        codes = torch.stack(codes, dim=0).reshape(self.config.num_codebooks, b, t // r, r)  # [K, B, steps, r]
        return codes.permute(1, 0, 3, 2).reshape(b, self.num_codebooks, t // r).contiguous()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        codes = self.check_codes(codes)  # [B, K·r, steps]
        codes = self._frames(codes)  # [B, K, T] mel frames
        return self._wave(sum(self.codebooks[i][codes[:, i]] for i in range(self.config.num_codebooks)))

    @torch.no_grad()
    def decode_expected(self, probs: torch.Tensor) -> torch.Tensor:
        probs = self._frames(self.check_probs(probs))  # [B, K, T, C]
        return self._wave(sum(probs[:, i] @ self.codebooks[i] for i in range(self.config.num_codebooks)))

    def _frames(self, steps: torch.Tensor) -> torch.Tensor:
        """Per-step layout [B, K·r, steps, ...] -> per-frame [B, K, steps·r, ...]."""
        b, _, n, *rest = steps.shape
        k, r = self.config.num_codebooks, self.config.frames_per_step
        return steps.reshape(b, k, r, n, *rest).transpose(2, 3).reshape(b, k, n * r, *rest)

    def _wave(self, feats: torch.Tensor) -> torch.Tensor:
        """Normalised log-mel frames [B, T, M] -> waves [B, (T-1)·hop] (T frames span T - 1 hops)."""
        if feats.shape[1] < 2:
            return torch.zeros(feats.shape[0], 0)
        mel = torch.exp(feats * self.std + self.mean) - LOG_FLOOR
        mag = (self.mel_inverse @ mel.clamp_min(0).transpose(1, 2)).clamp_min(0)  # [B, F, T]
        t = mag.shape[-1]
        shortest = self.config.n_fft // self.config.hop_length + 1  # the STFT's reflect padding needs this much
        if t < shortest:
            mag = torch.nn.functional.pad(mag, (0, shortest - t))  # silent frames, trimmed below
        return griffin_lim(mag, self.config, self.window)[:, : (t - 1) * self.config.hop_length]

    # -- persistence ------------------------------------------------------------------------
    def weights(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "std": self.std, "codebooks": self.codebooks}

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / "model.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in self.weights().items()}, str(tmp))
        write_json(directory / "config.json", {"codec_type": self.codec_type, **asdict(self.config)})
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "SpectralCodec":
        raw = read_config(directory, "codec")
        known = {f.name for f in fields(SpectralCodecConfig)}
        config = SpectralCodecConfig(**{k: v for k, v in raw.items() if k in known})
        weights_path = Path(directory) / "model.safetensors"
        if not weights_path.is_file():
            raise UniMoEError(f"no codec weights at {weights_path}")
        w = load_file(str(weights_path))
        expected = (config.num_codebooks, config.codebook_size, config.n_mels)
        if tuple(w["codebooks"].shape) != expected:
            raise UniMoEError(f"{weights_path}: codebooks have shape {list(w['codebooks'].shape)}, config says {list(expected)}")
        return cls(config, w["mean"], w["std"], w["codebooks"])

    # -- training ---------------------------------------------------------------------------
    @classmethod
    def train(cls, waves: Iterable[tuple[np.ndarray, int]], config: SpectralCodecConfig | None = None,
              max_frames: int = 200_000, progress: bool = True) -> "SpectralCodec":
        """Learn normalisation and K codebooks (residual or by bands) by k-means from (wave, sample_rate) pairs."""
        config = config or SpectralCodecConfig()
        data = _log_mels(waves, config, max_frames, config.codebook_size)  # [N, M]
        mean, std = data.mean(0), data.std(0).clamp_min(1e-3)
        books = _learn_codebooks((data - mean) / std, config, config.codebook_size, progress)
        return cls(config, mean, std, books)

    def extended(self, waves: Iterable[tuple[np.ndarray, int]], codes: int, max_frames: int = 200_000,
                 progress: bool = True) -> "SpectralCodec":
        """This codec with `codes` more codes in every codebook, learnt by k-means on `waves`
        (audio it codes badly: music, another language). Its own codes keep their ids and vectors,
        and the normalisation stays, so a model trained on its codes can go on with the grown
        codec's (`extends`; a recipe's `init:`): encoding picks, for each frame, the nearest of old
        and new vectors."""
        if codes < 1:
            raise UniMoEError(f"a codec is extended by at least one code per codebook, got {codes}")
        c = self.config
        data = _log_mels(waves, c, max_frames, codes)
        books = _learn_codebooks((data - self.mean) / self.std, c, codes, progress, before=self.codebooks)
        return SpectralCodec(replace(c, codebook_size=c.codebook_size + codes), self.mean, self.std, books)

    def extends(self, other: Codec) -> bool:
        if not isinstance(other, SpectralCodec):
            return False
        size = other.codebook_size
        return (replace(self.config, codebook_size=size) == other.config and self.codebook_size >= size
                and torch.equal(self.mean, other.mean) and torch.equal(self.std, other.std)
                and torch.equal(self.codebooks[:, :size], other.codebooks))

    @classmethod
    def train_on_files(cls, files: list[Path], config: SpectralCodecConfig | None = None, max_minutes: float = 60.0,
                       progress: bool = True) -> "SpectralCodec":
        """`train` on audio files read in a seeded random order, up to `max_minutes` of audio."""
        config = config or SpectralCodecConfig()
        waves, max_frames = _file_waves(files, config, max_minutes)
        return cls.train(waves, config, max_frames, progress)

    def extended_on_files(self, files: list[Path], codes: int, max_minutes: float = 60.0,
                          progress: bool = True) -> "SpectralCodec":
        """`extended` on audio files read in a seeded random order, up to `max_minutes` of audio."""
        waves, max_frames = _file_waves(files, self.config, max_minutes)
        return self.extended(waves, codes, max_frames, progress)


def _file_waves(files: list[Path], config: SpectralCodecConfig, max_minutes: float):
    """(waves of `files` in a seeded random order, the frames `max_minutes` of audio make)."""
    order = np.random.default_rng(config.seed).permutation(len(files))
    return ((load_audio(files[i], config.sample_rate) for i in order),
            int(max_minutes * 60 * config.sample_rate / config.hop_length))


def _log_mels(waves: Iterable[tuple[np.ndarray, int]], config: SpectralCodecConfig, max_frames: int,
              codes: int) -> torch.Tensor:
    """Log-mel frames [N, M] of `waves`, at most `max_frames`, enough for k-means of `codes` centres."""
    mel_basis = torch.from_numpy(librosa.filters.mel(sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels)).float()
    window = torch.hann_window(config.n_fft)
    frames, total = [], 0
    for wave, rate in waves:
        f = log_mel(prepare_wave(wave, rate, config.sample_rate), config, mel_basis, window)[0]
        frames.append(f)
        total += f.shape[0]
        if total >= max_frames:
            break
    if not frames:
        raise UniMoEError("no training audio given to the codec")
    data = torch.cat(frames)[:max_frames]
    if data.shape[0] < codes:
        raise UniMoEError(f"codec training needs at least {codes} frames ({codes / 50:.0f} s of audio) for {codes} codes "
                          f"per codebook; got {data.shape[0]}: give more audio or fewer codes per codebook")
    return data


def _learn_codebooks(residual: torch.Tensor, config: SpectralCodecConfig, codes: int, progress: bool,
                     before: torch.Tensor | None = None) -> torch.Tensor:
    """K codebooks [K, C, M] of `codes` k-means centres each on normalised frames [N, M]: codebook k
    clusters what codebooks < k left over (residual), or the k-th run of mel bins (bands, zero
    elsewhere). With `before` [K, C0, M], codebook k is before[k] followed by its new centres, and
    what it leaves over is measured with all of them."""
    gen = torch.Generator().manual_seed(config.seed)
    books = []
    stages = tqdm(range(config.num_codebooks), desc="codec k-means", unit="codebook", disable=not progress)
    bins = np.linspace(0, residual.shape[1], config.num_codebooks + 1).round().astype(int)
    for k in stages:
        cols = slice(bins[k], bins[k + 1]) if config.quantizer == "bands" else slice(None)
        book = torch.zeros(codes, residual.shape[1])
        book[:, cols] = kmeans(residual[:, cols].contiguous(), codes, config.kmeans_iters, gen)
        if before is not None:
            book = torch.cat([before[k], book])
        residual = residual - book[nearest(residual, book)]
        books.append(book)
        stages.set_postfix(residual=f"{residual.square().mean().item():.4f}")
    return torch.stack(books)


def log_mel(x: torch.Tensor, config: SpectralCodecConfig, mel_basis: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """[B, S] -> log-mel frames [B, T, M], T = 1 + S // hop."""
    shortest = config.n_fft // 2 + 1  # the STFT's centring reflects n_fft / 2 samples at each end
    if x.shape[-1] < shortest:
        raise UniMoEError(f"audio of {x.shape[-1]} samples ({1000 * x.shape[-1] / config.sample_rate:.0f} ms at "
                          f"{config.sample_rate} Hz) is shorter than the codec's analysis window: give at least "
                          f"{shortest} samples ({1000 * shortest / config.sample_rate:.0f} ms)")
    spec = torch.stft(x, config.n_fft, config.hop_length, window=window, return_complex=True)  # [B, F, T]
    mel = mel_basis @ spec.abs()
    return torch.log(mel + LOG_FLOOR).transpose(1, 2)


def griffin_lim(mag: torch.Tensor, config: SpectralCodecConfig, window: torch.Tensor) -> torch.Tensor:
    """Fast Griffin-Lim (Perraudin et al. 2013) from magnitudes [B, F, T] -> waves [B, (T-1)·hop].

    Batch-invariant: every row starts from the same (seeded) phase, and spectra are kept frame-major
    ([B, T, F], the layout `torch.stft` makes), so each row's inverse FFTs run alike at any batch
    size; with [B, F, T] spectra a row decoded alone and in a batch differ by rounding, which the
    iterations amplify (to a few per cent of the peak)."""
    gen = torch.Generator().manual_seed(config.seed)  # deterministic phase initialisation
    angles = torch.exp(2j * torch.pi * torch.rand(mag.shape[1:], generator=gen)).T.contiguous()  # [T, F]
    mag = mag.transpose(1, 2).contiguous()  # [B, T, F]
    length = (mag.shape[1] - 1) * config.hop_length
    previous = torch.zeros_like(angles)
    stft_kw = dict(n_fft=config.n_fft, hop_length=config.hop_length, window=window)
    for _ in range(config.griffin_lim_iters):
        wave = torch.istft((mag * angles).transpose(1, 2), length=length, **stft_kw)
        rebuilt = torch.stft(wave, return_complex=True, **stft_kw).transpose(1, 2)  # [B, T, F]
        accelerated = rebuilt - config.griffin_lim_momentum / (1 + config.griffin_lim_momentum) * previous
        angles = accelerated / accelerated.abs().clamp_min(1e-8)
        previous = rebuilt
    return torch.istft((mag * angles).transpose(1, 2), length=length, **stft_kw)


def nearest(x: torch.Tensor, book: torch.Tensor, chunk: int = 16_384) -> torch.Tensor:
    """Index of the nearest code for each row of x [N, M] in book [C, M] -> [N]."""
    book_sq = book.square().sum(-1)
    return torch.cat([(book_sq - 2 * part @ book.T).argmin(-1) for part in x.split(chunk)]) if len(x) else x.new_zeros(0, dtype=torch.long)


def kmeans(x: torch.Tensor, k: int, iters: int, gen: torch.Generator) -> torch.Tensor:
    """Lloyd's k-means from a seeded random sample of points; empty clusters re-seeded."""
    centers = x[torch.randperm(len(x), generator=gen)[:k]].clone()
    for _ in range(iters):
        assign = nearest(x, centers)
        sums = torch.zeros_like(centers).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        empty = counts == 0
        centers = sums / counts.clamp_min(1)[:, None]
        if empty.any():
            centers[empty] = x[torch.randint(len(x), (int(empty.sum()),), generator=gen)]
    return centers
