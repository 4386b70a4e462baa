"""Adapters for pretrained neural codecs on local disk: DAC (the paper's codec) and EnCodec.

They wrap `transformers`' `DacModel` / `EncodecModel` loaded from a directory the user gives
(`config.json` + weights, as written by `save_pretrained`); nothing is downloaded. For the
paper's setting use the 16 kHz DAC (12 codebooks × 1024, 50 frames/s).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from unimoe_audio.codec.audio import prepare_wave
from unimoe_audio.codec.base import Codec
from unimoe_audio.errors import UniMoEError
from unimoe_audio.io import read_config


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

    def weights(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def save_pretrained(self, directory: str | Path) -> Path:
        self.model.save_pretrained(str(directory))
        return Path(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "TransformersCodec":
        config = read_config(directory, "codec")
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


DESCRIPT_WEIGHTS = "weights_16khz.pth"


def _descript_to_transformers(name: str, encoder_blocks: int, decoder_blocks: int) -> str:
    """descript-audio-codec parameter name -> transformers DacModel name (weight norm folded)."""
    unit = {"0": "snake1", "1": "conv1", "2": "snake2", "3": "conv2"}  # a residual unit's layers
    parts = name.split(".")
    if parts[0] == "encoder":  # encoder.block.{0: conv, 1..n: blocks, n+1: snake, n+2: conv}
        i = int(parts[2])
        if i == 0:
            return ".".join(["encoder.conv1", *parts[3:]])
        if i == encoder_blocks + 1:
            return ".".join(["encoder.snake1", *parts[3:]])
        if i == encoder_blocks + 2:
            return ".".join(["encoder.conv2", *parts[3:]])
        j = int(parts[4])  # encoder.block.i.block.j: 0-2 residual units, 3 snake, 4 strided conv
        if j < 3:
            return ".".join([f"encoder.block.{i - 1}.res_unit{j + 1}", unit[parts[6]], *parts[7:]])
        return ".".join([f"encoder.block.{i - 1}", "snake1" if j == 3 else "conv1", *parts[5:]])
    if parts[0] == "decoder":  # decoder.model.{0: conv, 1..m: blocks, m+1: snake, m+2: conv}
        i = int(parts[2])
        if i == 0:
            return ".".join(["decoder.conv1", *parts[3:]])
        if i == decoder_blocks + 1:
            return ".".join(["decoder.snake1", *parts[3:]])
        if i == decoder_blocks + 2:
            return ".".join(["decoder.conv2", *parts[3:]])
        j = int(parts[4])  # decoder.model.i.block.j: 0 snake, 1 transposed conv, 2-4 residual units
        if j < 2:
            return ".".join([f"decoder.block.{i - 1}", "snake1" if j == 0 else "conv_t1", *parts[5:]])
        return ".".join([f"decoder.block.{i - 1}.res_unit{j - 1}", unit[parts[6]], *parts[7:]])
    return name  # quantizer.quantizers.{i}.{in_proj, out_proj, codebook} keep their names


def load_descript_dac(path: str | Path):
    """descript-audio-codec's saved model (`weights_16khz.pth`: state_dict + metadata kwargs) as a
    transformers `DacModel`, weight norm folded into plain weights. Reads tensors only (no pickle code)."""
    from transformers import DacConfig, DacModel

    path = Path(path)
    if not path.is_file():
        raise UniMoEError(f"DAC weights not found: {path}")
    try:
        saved = torch.load(str(path), map_location="cpu", weights_only=True)
        state, kwargs = saved["state_dict"], saved["metadata"]["kwargs"]
    except (RuntimeError, KeyError, TypeError, EOFError) as err:
        raise UniMoEError(f"{path} is not a descript-audio-codec model file: {err}") from None
    enc_rates, dec_rates = list(kwargs["encoder_rates"]), list(kwargs["decoder_rates"])
    enc_dim = int(kwargs["encoder_dim"])
    config = DacConfig(encoder_hidden_size=enc_dim, downsampling_ratios=enc_rates,
                       decoder_hidden_size=int(kwargs["decoder_dim"]), upsampling_ratios=dec_rates,
                       n_codebooks=int(kwargs["n_codebooks"]), codebook_size=int(kwargs["codebook_size"]),
                       codebook_dim=int(kwargs["codebook_dim"]), sampling_rate=int(kwargs["sample_rate"]),
                       hidden_size=int(kwargs.get("latent_dim") or enc_dim * 2 ** len(enc_rates)),
                       hop_length=math.prod(enc_rates))
    weights = {}
    for name, tensor in state.items():
        if name.endswith(".weight_g"):
            continue
        if name.endswith(".weight_v"):  # weight norm over every dim but 0: w = g · v / ‖v‖
            tensor = torch._weight_norm(tensor, state[name[:-1] + "g"], 0)
            name = name[:-2]
        weights[_descript_to_transformers(name, len(enc_rates), len(dec_rates))] = tensor
    model = DacModel(config)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise UniMoEError(f"{path} does not match a DAC of its own metadata: {str(err).splitlines()[0]}") from None
    return model.eval()


def load_dac(directory: str | Path) -> DacCodec:
    """A DAC folder: descript's `weights_16khz.pth` (as released) or a transformers `DacModel` folder."""
    directory = Path(directory)
    if (directory / DESCRIPT_WEIGHTS).is_file():
        return DacCodec(load_descript_dac(directory / DESCRIPT_WEIGHTS))
    if (directory / "config.json").is_file():
        return DacCodec.from_pretrained(directory)
    raise UniMoEError(f"codec file {directory / DESCRIPT_WEIGHTS} is missing (or a transformers DacModel folder)")
