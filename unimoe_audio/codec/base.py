"""The codec interface: waveforms <-> discrete codes [B, K, T], saved as config.json + safetensors."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path

import torch

from unimoe_audio.codec.delay import DelayPattern
from unimoe_audio.errors import UniMoEError
from unimoe_audio.io import read_config

CODEC_TYPES: dict[str, type["Codec"]] = {}


class Codec(ABC):
    """`encode(wave, sample_rate) -> LongTensor [B, K, T]`, `decode(codes) -> FloatTensor [B, samples]`;
    codecs whose decoder is linear in the code vectors also `decode_expected(probs)`: the
    expectation of those vectors under a distribution over each code (`decodes_expected`).

    `wave` may be [T], [B, T] or [B, C, T], float or integer PCM, at any sample rate: codecs
    downmix and resample (soxr) before encoding. Encoding and decoding are deterministic, and a
    row decodes to the same waveform (up to float rounding) alone or in a batch.
    """

    codec_type: str
    sample_rate: int
    frame_rate: float
    num_codebooks: int
    codebook_size: int
    decodes_expected: bool = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if getattr(cls, "codec_type", None):
            CODEC_TYPES[cls.codec_type] = cls

    @property
    def delays(self) -> tuple[int, ...]:
        """The delay pattern a model of these codes uses: the paper's [0, 8, ..., 18] for 12
        codebooks, else codebook k delayed by k steps."""
        if self.num_codebooks == 12:
            return DelayPattern.paper(self.codebook_size).delays
        return DelayPattern.uniform(self.num_codebooks, self.codebook_size).delays

    @abstractmethod
    def encode(self, wave, sample_rate: int) -> torch.Tensor: ...

    @abstractmethod
    def decode(self, codes: torch.Tensor) -> torch.Tensor: ...

    def decode_expected(self, probs: torch.Tensor) -> torch.Tensor:
        """Distributions over each code [B, K, T, codebook_size] -> FloatTensor [B, samples]."""
        raise UniMoEError(f"the {self.codec_type} codec decodes codes only, not distributions over them")

    def check_probs(self, probs: torch.Tensor) -> torch.Tensor:
        """Validate distributions [B, K, T, C] (or [K, T, C]) before `decode_expected`."""
        probs = torch.as_tensor(probs)
        if probs.dim() == 3:
            probs = probs[None]
        if probs.dim() != 4 or probs.shape[1] != self.num_codebooks or probs.shape[-1] != self.codebook_size:
            raise UniMoEError(f"code distributions must be [B, {self.num_codebooks}, T, {self.codebook_size}], "
                              f"got {list(probs.shape)}")
        if not probs.is_floating_point():
            raise UniMoEError("code distributions must be floating point")
        if probs.shape[2] == 0:
            raise UniMoEError("code distributions hold no frames")
        if not bool(torch.isfinite(probs).all()) or bool((probs < 0).any()) \
                or not torch.allclose(probs.sum(-1), torch.ones(()), atol=1e-3):
            raise UniMoEError("code distributions must be non-negative and sum to 1 over each code")
        return probs.float()

    @abstractmethod
    def save_pretrained(self, directory: str | Path) -> Path: ...

    @classmethod
    @abstractmethod
    def from_pretrained(cls, directory: str | Path) -> "Codec": ...

    @abstractmethod
    def weights(self) -> dict[str, torch.Tensor]:
        """Every tensor that decides the codes (what `fingerprint` hashes)."""

    def fingerprint(self) -> str:
        """SHA-256 of the codec's type, rate and weights: token shards record it, so codes made by
        another codec are never read as this one's."""
        h = hashlib.sha256(f"{self.codec_type}|{self.sample_rate}|{self.frame_rate}".encode())
        for name, tensor in sorted(self.weights().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def extends(self, other: "Codec") -> bool:
        """Whether every code of `other` means the same sound here (so a model trained on its codes
        can go on with this codec's): the same codec, or one grown from it (SpectralCodec.extended)."""
        return self.fingerprint() == other.fingerprint()

    def check_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Validate codes [B, K, T] (or [K, T]) before decoding: shape and value range."""
        codes = torch.as_tensor(codes)
        if codes.dim() == 2:
            codes = codes[None]
        if codes.dim() != 3 or codes.shape[1] != self.num_codebooks:
            raise UniMoEError(f"codes must be [B, {self.num_codebooks}, T], got {list(codes.shape)}")
        if codes.is_floating_point():
            raise UniMoEError("codes must be integers")
        if codes.shape[-1] == 0:
            raise UniMoEError("codes hold no frames")
        if codes.min() < 0 or codes.max() >= self.codebook_size:
            raise UniMoEError(f"codes must lie in [0, {self.codebook_size}); got values in "
                              f"[{int(codes.min())}, {int(codes.max())}] (strip EOS/PAD/BOS before decoding)")
        return codes.long()


def load_codec(directory: str | Path) -> Codec:
    """Load any saved codec; dispatches on config.json's "codec_type"."""
    import unimoe_audio.codec  # noqa: F401  (registers every codec type)

    config = read_config(directory, "codec")
    # Hugging Face codec directories carry "model_type" ("dac", "encodec") instead of our "codec_type".
    codec_type = config.get("codec_type", config.get("model_type"))
    if codec_type not in CODEC_TYPES:
        raise UniMoEError(f"{directory}: unknown codec_type {codec_type!r}; known: {sorted(CODEC_TYPES)}")
    return CODEC_TYPES[codec_type].from_pretrained(directory)
