"""DAC / EnCodec adapters over small randomly initialised transformers models saved to disk."""

import json

import numpy as np
import pytest
import torch
from transformers import DacConfig, DacModel, EncodecConfig, EncodecModel

from unimoe_audio.codec import DacCodec, EncodecCodec, load_codec
from unimoe_audio.errors import UniMoEError


@pytest.fixture(scope="module")
def dac_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = DacConfig(encoder_hidden_size=8, downsampling_ratios=[4, 5], decoder_hidden_size=16, n_codebooks=3,
                       codebook_size=32, codebook_dim=4, hidden_size=16, sampling_rate=16_000)
    path = tmp_path_factory.mktemp("dac")
    DacModel(config).save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def encodec_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = EncodecConfig(target_bandwidths=[3.0, 6.0], sampling_rate=16_000, audio_channels=1, num_filters=4,
                           hidden_size=16, codebook_size=32, upsampling_ratios=[8, 5, 4], codebook_dim=16,
                           num_lstm_layers=1, normalize=False)
    path = tmp_path_factory.mktemp("encodec")
    EncodecModel(config).save_pretrained(str(path))
    return path


@pytest.mark.parametrize("which", ["dac", "encodec"])
def test_adapter_encode_decode_shapes(which, dac_dir, encodec_dir):
    path = dac_dir if which == "dac" else encodec_dir
    codec = load_codec(path)
    assert isinstance(codec, DacCodec if which == "dac" else EncodecCodec)
    wave = np.random.default_rng(0).normal(0, 0.1, (2, 22_050)).astype(np.float32)  # other rate, batch of 2
    codes = codec.encode(wave, 22_050)
    frames = round(16_000 / (16_000 / codec.frame_rate))
    assert codes.dtype == torch.int64 and codes.shape[:2] == (2, codec.num_codebooks)
    assert abs(codes.shape[-1] - codec.frame_rate) <= 2 and frames > 0
    assert codes.max() < codec.codebook_size
    assert torch.equal(codes, codec.encode(wave, 22_050))
    out = codec.decode(codes)
    assert out.shape[0] == 2 and out.dtype == torch.float32
    assert abs(out.shape[-1] - 16_000) <= 16_000 / codec.frame_rate * 2


def test_missing_or_mismatched_directories_raise(dac_dir, tmp_path):
    with pytest.raises(UniMoEError, match="config.json is missing"):
        DacCodec.from_pretrained(tmp_path)
    with pytest.raises(UniMoEError, match="not 'encodec'"):
        EncodecCodec.from_pretrained(dac_dir)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({**json.loads((dac_dir / "config.json").read_text()), "n_codebooks": 5}))
    with pytest.raises(UniMoEError, match="cannot load dac weights"):
        DacCodec.from_pretrained(broken)
