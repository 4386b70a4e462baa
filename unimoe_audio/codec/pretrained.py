"""Adapters for pretrained neural codecs on local disk: DAC (the paper's codec) and EnCodec.

They wrap `transformers`' `DacModel` / `EncodecModel` loaded from a directory the user gives
(`config.json` + weights, as written by `save_pretrained`); nothing is downloaded. For the
paper's setting use the 16 kHz DAC (12 codebooks × 1024, 50 frames/s).
"""

from __future__ import annotations

from pathlib import Path

import torch

from unimoe_audio.codec.audio import prepare_wave
from unimoe_audio.codec.base import Codec, read_config
from unimoe_audio.errors import UniMoEError


class TransformersCodec(Codec):
    """Common wrapper; subclasses name the transformers class and how codes are laid out."""

    model_type: str

    def __init__(self, model):
        self.model = model.eval()
        config = model.config
        self.sample_rate = int(config.sampling_rate)
        self.frame_rate = self.sample_rate / self.hop_length(config)
        self.codebook_size = int(config.codebook_size)
        self.num_codebooks = self.codebooks(config)

    @classmethod
    def model_class(cls):
        raise NotImplementedError

    @staticmethod
    def hop_length(config) -> int:
        raise NotImplementedError

    @staticmethod
    def codebooks(config) -> int:
        raise NotImplementedError

    def save_pretrained(self, directory: str | Path) -> Path:
        self.model.save_pretrained(str(directory))
        return Path(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "TransformersCodec":
        config = read_config(directory)
        if config.get("model_type") != cls.model_type:
            raise UniMoEError(f"{directory} holds a {config.get('model_type')!r} model, not {cls.model_type!r}")
        try:
            model = cls.model_class().from_pretrained(str(directory), local_files_only=True)
        except (OSError, ValueError, RuntimeError) as err:
            raise UniMoEError(f"cannot load {cls.model_type} weights from {directory}: {err}") from None
        return cls(model)


class DacCodec(TransformersCodec):
    codec_type = "dac"
    model_type = "dac"

    @classmethod
    def model_class(cls):
        from transformers import DacModel

        return DacModel

    @staticmethod
    def hop_length(config) -> int:
        return int(config.hop_length)

    @staticmethod
    def codebooks(config) -> int:
        return int(config.n_codebooks)

    @torch.no_grad()
    def encode(self, wave, sample_rate: int) -> torch.Tensor:
        x = prepare_wave(wave, sample_rate, self.sample_rate)[:, None]  # [B, 1, S]
        return self.model.encode(x).audio_codes.long()  # [B, K, T]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.model.decode(audio_codes=self.check_codes(codes)).audio_values.reshape(codes.shape[0], -1).float()


class EncodecCodec(TransformersCodec):
    """EnCodec at its largest configured bandwidth (all codebooks)."""

    codec_type = "encodec"
    model_type = "encodec"

    @classmethod
    def model_class(cls):
        from transformers import EncodecModel

        return EncodecModel

    @staticmethod
    def hop_length(config) -> int:
        hop = 1
        for ratio in config.upsampling_ratios:
            hop *= ratio
        return hop

    @staticmethod
    def codebooks(config) -> int:
        return int(config.num_quantizers)

    @torch.no_grad()
    def encode(self, wave, sample_rate: int) -> torch.Tensor:
        if self.model.config.audio_channels != 1:
            raise UniMoEError("only mono EnCodec models are supported (audio_channels = 1)")
        x = prepare_wave(wave, sample_rate, self.sample_rate)[:, None]
        bandwidth = max(self.model.config.target_bandwidths)
        out = self.model.encode(x, bandwidth=bandwidth)
        if out.audio_codes.shape[0] != 1:
            raise UniMoEError("chunked EnCodec models (chunk_length_s set) are not supported")
        return out.audio_codes[0].long()  # [B, K, T]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        codes = self.check_codes(codes)
        return self.model.decode(codes[None], [None]).audio_values.reshape(codes.shape[0], -1).float()
