"""A released-format folder through every entry point, the DAC's two formats, and clear errors."""

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from unimoe_audio.cli.main import main
from unimoe_audio.codec import load_dac
from unimoe_audio.errors import UniMoEError
from unimoe_audio.model import GenerationConfig, UniMoEAudio
from unimoe_audio.model.released import ReleasedUniMoEAudio

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "released"
_spec = importlib.util.spec_from_file_location("released_tiny", FIXTURES / "tiny.py")
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)
LAYOUT = json.loads((FIXTURES / "layout.json").read_text())
_spec = importlib.util.spec_from_file_location("released_dac", FIXTURES / "dac.py")
_dac = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_dac)
write_dac_both_ways = _dac.write_dac_both_ways


def test_dac_from_descript_file_equals_the_transformers_folder(tmp_path):
    pth, hf = write_dac_both_ways(tmp_path)
    a, b = load_dac(pth), load_dac(hf)
    assert (a.num_codebooks, a.codebook_size, a.sample_rate) == (12, 1024, 16_000)
    wave = np.random.default_rng(0).normal(0, 0.1, (2, 2, 4_410)).astype(np.float32)  # stereo, another rate
    codes = a.encode(wave, 22_050)
    assert torch.equal(codes, b.encode(wave, 22_050))
    audio = a.decode(codes)
    assert 0.01 < audio.abs().mean() < 0.9 and torch.allclose(audio, b.decode(codes), atol=1e-5)
    with pytest.raises(UniMoEError, match="weights_16khz.pth is missing"):
        load_dac(tmp_path / "nothing")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("released")
    ckpt = tiny.write_checkpoint(root / "UniMoE-Audio-preview", LAYOUT, seed=0)
    pth, _ = write_dac_both_ways(root)
    shutil.copytree(pth, ckpt / "dac_model")
    return ckpt


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


GREEDY = GenerationConfig(decoding="released", max_frames=12, min_frames=3, temperature=0.0)


def test_released_folder_loads_through_the_api_cli_and_conversion_unmodified(folder, tmp_path):
    before = digest(folder)
    api = UniMoEAudio.from_pretrained(folder)
    assert isinstance(api, ReleasedUniMoEAudio)
    assert api.default_config("t2m").guidance_scale is None and api.default_config("t2m").max_frames == 981
    music = api.request("t2m", caption="A calm piano piece.")
    voice = np.random.default_rng(1).normal(0, 0.1, 9_600).astype(np.float32)
    speech = api.request("clone", text="Hello there.", language="en", prompt_audio=(voice, 16_000),
                         prompt_text="The voice prompt.")
    frames = np.random.default_rng(2).integers(0, 256, (2, 40, 60, 3), dtype=np.uint8)
    video = api.request("v2m", caption="A calm piano piece.", video=frames)
    codes = api.generator.run([music, speech, video], GREEDY)
    wave, rate = api.music("A calm piano piece.", config=GREEDY)
    assert rate == 16_000 and wave.dtype == np.float32 and len(wave) == codes[0].shape[-1] * 8

    assert main(["convert", "--from-released", str(folder), "--out", str(tmp_path / "converted")]) == 0
    converted = UniMoEAudio.from_pretrained(tmp_path / "converted")
    assert isinstance(converted, ReleasedUniMoEAudio)
    again = converted.generator.run([music, speech, converted.request("v2m", caption="A calm piano piece.",
                                                                       video=frames)], GREEDY)
    assert all(torch.equal(a, b) for a, b in zip(codes, again))
    weight_map = json.loads((tmp_path / "converted" / "model.safetensors.index.json").read_text())["weight_map"]
    assert {n for n in LAYOUT if n.startswith("visual.") or n == "lm_head.weight"} <= set(weight_map)
    visual = next(n for n in LAYOUT if n.startswith("visual."))
    original = load_file(str(folder / json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"][visual]))
    with safe_open(str(tmp_path / "converted" / weight_map[visual]), "pt") as f:
        assert torch.equal(f.get_tensor(visual), original[visual])

    assert main(["convert", "--from-released", str(folder), "--out", str(tmp_path / "bf16"), "--dtype", "bfloat16"]) == 0
    with safe_open(str(next((tmp_path / "bf16").glob("model-*.safetensors"))), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    assert UniMoEAudio.from_pretrained(tmp_path / "bf16").model.head.weight.dtype == torch.bfloat16

    out = tmp_path / "clone.wav"
    assert main(["generate", "--model", str(folder), "--task", "clone", "--text", "Hi.", "--prompt-text", "A prompt.",
                 "--prompt-audio", str(write_wav(tmp_path / "p.wav", voice)), "--seed", "0", "--top-k", "5",
                 "-o", str(out)]) == 0
    assert out.is_file()
    assert digest(folder) == before  # the released folder is never modified


def write_wav(path, wave):
    import soundfile as sf
    sf.write(str(path), wave, 16_000)
    return path


def broken_copy(folder: Path, tmp_path: Path, name: str) -> Path:
    copy = tmp_path / name
    shutil.copytree(folder, copy)
    return copy


def test_bad_folders_give_one_clear_error_naming_the_file_or_tensor(folder, tmp_path, capsys):
    not_released = broken_copy(folder, tmp_path, "other")
    cfg = json.loads((not_released / "config.json").read_text())
    (not_released / "config.json").write_text(json.dumps({**cfg, "model_type": "qwen2_5_vl"}))
    assert main(["convert", "--from-released", str(not_released), "--out", str(tmp_path / "x")]) == 2
    assert "model_type" in capsys.readouterr().err

    no_shard = broken_copy(folder, tmp_path, "no-shard")
    (no_shard / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(UniMoEError, match="missing shard .*model-00002-of-00003.safetensors"):
        UniMoEAudio.from_pretrained(no_shard)

    no_vocab = broken_copy(folder, tmp_path, "no-tokenizer")
    (no_vocab / "tokenizer_config.json").unlink()
    with pytest.raises(UniMoEError, match="tokenizer_config.json is missing"):
        UniMoEAudio.from_pretrained(no_vocab)

    no_codec = broken_copy(folder, tmp_path, "no-codec")
    shutil.rmtree(no_codec / "dac_model")
    with pytest.raises(UniMoEError, match="dac_model/weights_16khz.pth is missing"):
        UniMoEAudio.from_pretrained(no_codec)

    bad_shape = broken_copy(folder, tmp_path, "bad-shape")
    index = json.loads((bad_shape / "model.safetensors.index.json").read_text())["weight_map"]
    name = "model.layers.1.mlp.gate.weight"
    shard = bad_shape / index[name]
    tensors = load_file(str(shard))
    tensors[name] = torch.zeros(10, 64)
    save_file(tensors, str(shard))
    with pytest.raises(UniMoEError, match=r"model.layers.1.mlp.gate.weight has shape \[10, 64\].*\[11, 64\]"):
        UniMoEAudio.from_pretrained(bad_shape)

    missing = broken_copy(folder, tmp_path, "missing-tensor")
    index_path = missing / "model.safetensors.index.json"
    data = json.loads(index_path.read_text())
    del data["weight_map"]["codec_head.weight"]
    index_path.write_text(json.dumps(data))
    with pytest.raises(UniMoEError, match="tensor codec_head.weight is missing"):
        UniMoEAudio.from_pretrained(missing)
