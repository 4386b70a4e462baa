"""A very small model, front-end and codec built in-process (no corpus, no training)."""

import pytest
import torch

from unimoe_audio.codec import SpectralCodec, SpectralCodecConfig
from unimoe_audio.data import Example
from unimoe_audio.model import TextFrontend, UniMoEAudioConfig
from unimoe_audio.moe import DCMoEConfig

K, C = 4, 64

ENTRIES = [
    {"task": "tts", "group": "speech-en", "language": "en", "text": "The birch canoe slid.", "speaker": "en_slt"},
    {"task": "tts", "group": "speech-zh", "language": "zh", "text": "你好世界", "speaker": "zh_m1"},
    {"task": "clone", "group": "speech-en", "language": "en", "text": "Rice is served.", "speaker": "en_rms",
     "prompt_text": "Glue the sheet."},
    {"task": "t2m", "group": "music", "language": None, "caption": "A jig on violin at 120 BPM in D major."},
]


def tiny_config(frontend, ffn="moe", **changes) -> UniMoEAudioConfig:
    moe = DCMoEConfig(hidden_size=32, num_routed=4, routed_size=16, num_null=1, num_shared=1, shared_size=16)
    fields = dict(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, ffn=ffn, intermediate_size=64, moe=moe,
                  text_vocab_size=len(frontend), num_codebooks=K, codebook_size=C, delays=(0, 1, 2, 3), max_positions=512)
    return UniMoEAudioConfig(**{**fields, **changes})


@pytest.fixture(scope="session")
def frontend():
    return TextFrontend.fit(ENTRIES)


@pytest.fixture
def examples():
    gen = torch.Generator().manual_seed(0)
    out = []
    for i, entry in enumerate(ENTRIES):
        codes = torch.randint(0, C, (K, 10 + 3 * i), generator=gen)
        prompt = torch.randint(0, C, (K, 7), generator=gen) if entry["task"] == "clone" else None
        out.append(Example(meta=entry, codes=codes, prompt_codes=prompt))
    return out


def tiny_codec() -> SpectralCodec:
    config = SpectralCodecConfig(num_codebooks=K, codebook_size=C, n_mels=32, griffin_lim_iters=2)
    gen = torch.Generator().manual_seed(0)
    return SpectralCodec(config, torch.zeros(32), torch.ones(32), torch.randn(K, C, 32, generator=gen) * 0.1)


@pytest.fixture(scope="session")
def codec():
    return tiny_codec()
