"""The authors' released checkpoint, run exactly: folder format, tokenizer and prompts, decoding."""

from unimoe_audio.model.released.api import (ReleasedUniMoEAudio, convert_released, is_released_or_converted, iter_extras,
                                             write_converted)
from unimoe_audio.model.released.checkpoint import is_released, iter_released, load_released_model, released_config
from unimoe_audio.model.released.prompts import ReleasedPrompts, load_tokenizer, voice_prompt_layout

__all__ = ["ReleasedPrompts", "ReleasedUniMoEAudio", "convert_released", "is_released", "is_released_or_converted",
           "iter_extras", "iter_released", "load_released_model", "load_tokenizer", "released_config", "voice_prompt_layout",
           "write_converted"]
