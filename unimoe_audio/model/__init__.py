"""The UniMoE-Audio model: transformer, text front-end, sequence format, generation, user API."""

from unimoe_audio.model.config import PRESETS, UniMoEAudioConfig
from unimoe_audio.model.frontend import TextFrontend
from unimoe_audio.model.generate import Decoding, GenerationConfig, Generator
from unimoe_audio.model.pipeline import AudioChunks, UniMoEAudio, load_model, save_model
from unimoe_audio.model.sequence import FrontendPrompts, Request, SequenceCollator, encode_prompt
from unimoe_audio.model.transformer import IGNORE, KVCache, ModelOutput, UniMoEAudioModel
from unimoe_audio.model.vision import VisionConfig, VisionEncoder

__all__ = ["AudioChunks", "Decoding", "FrontendPrompts", "GenerationConfig", "Generator", "IGNORE", "KVCache", "ModelOutput", "PRESETS", "Request",
           "SequenceCollator", "TextFrontend", "UniMoEAudio", "UniMoEAudioConfig", "UniMoEAudioModel",
           "VisionConfig", "VisionEncoder", "encode_prompt", "load_model", "save_model"]
