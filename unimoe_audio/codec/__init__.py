"""Audio <-> discrete tokens: the codec interface, the built-in codec, the delay pattern."""

from unimoe_audio.codec.audio import load_audio, mono, prepare_wave, save_audio
from unimoe_audio.codec.base import Codec, load_codec
from unimoe_audio.codec.delay import DelayPattern
from unimoe_audio.codec.pretrained import DacCodec, EncodecCodec, load_dac
from unimoe_audio.codec.spectral import SpectralCodec, SpectralCodecConfig

__all__ = ["Codec", "DacCodec", "DelayPattern", "EncodecCodec", "SpectralCodec", "SpectralCodecConfig", "load_audio", "load_codec", "load_dac",
           "mono", "prepare_wave", "save_audio"]
