"""Fine-tuning a tiny released-format checkpoint: full and LoRA, then loading and generating; clear errors."""

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from unimoe_audio.cli.main import main
from unimoe_audio.data import TokenDataset
from unimoe_audio.errors import UniMoEError
from unimoe_audio.model import GenerationConfig, Request, SequenceCollator, UniMoEAudio, UniMoEAudioModel
from unimoe_audio.train import memory
from unimoe_audio.train.config import StageConfig
from unimoe_audio.train.finetune import FinetuneConfig, LoRASettings, apply_lora, finetune

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "released"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"released_{name}", FIXTURES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tiny, dac = _load("tiny"), _load("dac")
LAYOUT = json.loads((FIXTURES / "layout.json").read_text())
ITEMS = [  # the tiny DAC makes 2000 frames/s: 0.01 s of audio is 20 frames
    {"id": "m0", "task": "t2m", "group": "music", "language": None, "caption": "A calm piano piece.", "seconds": 0.01},
    {"id": "c0", "task": "clone", "group": "speech-en", "language": "en", "text": "Hello there.", "speaker": "a",
     "prompt_text": "The voice prompt.", "prompt_audio": "audio/p0.wav", "seconds": 0.006},
    {"id": "t0", "task": "tts", "group": "speech-en", "language": "en", "text": "No prompt.", "speaker": "a",
     "seconds": 0.006},  # the released prompts cannot express it: left out
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    ckpt = tiny.write_checkpoint(root / "ckpt", LAYOUT, seed=0)
    pth, _ = dac.write_dac_both_ways(root)
    shutil.copytree(pth, ckpt / "dac_model")
    corpus = root / "corpus"
    (corpus / "audio").mkdir(parents=True)
    rng = np.random.default_rng(0)
    entries = []
    for item in ITEMS:
        entry = {k: v for k, v in item.items() if k != "seconds"} | {"audio": f"audio/{item['id']}.wav"}
        sf.write(corpus / entry["audio"], rng.normal(0, 0.2, round(16_000 * item["seconds"])).astype(np.float32), 16_000)
        entries.append(entry)
    sf.write(corpus / "audio" / "p0.wav", rng.normal(0, 0.2, 80).astype(np.float32), 16_000)
    for split in ("train", "validation"):
        (corpus / f"{split}.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    return ckpt, corpus


def stage(steps: int, lr: float) -> StageConfig:
    return StageConfig(steps=steps, lr=lr, batch_size=2, warmup_ratio=0.0, min_lr_ratio=1.0, weight_decay=0.0,
                       eval_every=steps, log_every=steps, checkpoint_every=steps, align_layer=0)


def item_loss(api, examples) -> float:
    """Mean released-prompt codec loss of the examples (no condition dropout)."""
    batch = SequenceCollator(api.generator.prompts)(examples)
    with torch.no_grad():
        return api.model.eval()(**batch).codec_loss.item()


def test_full_finetuning_lowers_the_items_loss_and_the_saved_model_regenerates_one(setup, tmp_path):
    ckpt, corpus = setup
    config = FinetuneConfig(model=str(ckpt), corpus=str(corpus), out=str(tmp_path / "run"), stage=stage(120, 3e-3),
                            cond_dropout=0.0)
    final = finetune(config, progress=False)
    train = TokenDataset(corpus / "tokens", "train")  # encoded by finetune with the checkpoint's DAC
    assert train.info["codec_type"] == "dac" and (train.info["num_codebooks"], train.info["codebook_size"]) == (12, 1024)
    examples = [train[0], train[1]]  # the t2m and clone items (the tts item was never trained on)
    before = item_loss(UniMoEAudio.from_pretrained(ckpt, dtype=torch.float32), examples)
    tuned = UniMoEAudio.from_pretrained(final)
    after = item_loss(tuned, examples)
    assert after < 0.05 * 12 < before
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 120 and metrics[-1]["aux_weight"] < 0.025 and "eval/music" in metrics[-1]
    codes = tuned.generator.run([Request.from_example(examples[0])],
                                GenerationConfig(max_frames=60, temperature=0.0, guidance_scale=0.0))[0]
    assert torch.equal(codes, examples[0].codes)


def test_lora_trains_only_adapters_saves_them_alone_and_a_merged_model_that_generates(setup, tmp_path):
    ckpt, corpus = setup
    out = tmp_path / "lora"
    assert main(["finetune", "--model", str(ckpt), "--corpus", str(corpus), "--out", str(out), "--lora",
                 "--lora-targets", "attention,routed,shared,gates", "--lora-rank", "4", "--steps", "40", "--lr", "1e-2",
                 "--batch-size", "2", "--cond-dropout", "0", "--set", "warmup_ratio=0", "--set", "weight_decay=0",
                 "--set", "eval_every=40", "--set", "align_layer=0"]) == 0
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert all("lora_" in name for name in adapter)
    for part in ("attn.q_proj", "ffn.gate", "ffn.shared_gate_up", "ffn.shared_down", "ffn.experts"):
        assert any(part in name for name in adapter), part
    base = UniMoEAudio.from_pretrained(ckpt, dtype=torch.float32)
    merged = UniMoEAudio.from_pretrained(out / "model")
    old, new = base.model.state_dict(), merged.model.state_dict()
    changed = {name for name in old if not torch.equal(old[name], new[name])}
    assert "layers.0.ffn.experts.w_up" in changed and "layers.1.attn.o_proj.weight" in changed
    assert "layers.0.ffn.gate.weight" in changed and "layers.1.ffn.shared_down.weight" in changed
    assert not any(("embed" in n or "head" in n or "norm" in n or n.endswith("bias")) for n in changed)
    train = TokenDataset(corpus / "tokens", "train")
    examples = [train[0], train[1]]
    tuned = item_loss(merged, examples)
    assert tuned < 0.9 * item_loss(base, examples)
    from peft import PeftModel

    with_adapter = PeftModel.from_pretrained(base.model, str(out / "adapter"))  # the adapters alone, on the base
    batch = SequenceCollator(base.generator.prompts)(examples)
    with torch.no_grad():
        assert abs(with_adapter.eval()(**batch).codec_loss.item() - tuned) < 1e-4
    codes = merged.generator.run([Request.from_example(examples[0])], GenerationConfig(max_frames=8, temperature=0.0))[0]
    assert codes.shape[0] == 12 and 0 < codes.shape[1] <= 8


def test_bad_input_is_refused_before_training(setup, tmp_path, capsys, monkeypatch):
    ckpt, corpus = setup
    other = tmp_path / "other-codec"
    shutil.copytree(corpus, other, ignore=shutil.ignore_patterns("tokens"))
    (other / "tokens" / "train").mkdir(parents=True)
    (other / "tokens" / "train" / "info.json").write_text(json.dumps(
        {"codec_type": "spectral", "num_codebooks": 4, "codebook_size": 64, "items": 0, "skipped": []}))
    np.save(other / "tokens" / "train" / "codes.npy", np.zeros((4, 0), np.int16))
    (other / "tokens" / "train" / "index.jsonl").write_text("")
    config = FinetuneConfig(model=str(ckpt), corpus=str(other), out=str(tmp_path / "x"), stage=stage(1, 1e-3))
    with pytest.raises(UniMoEError, match=r"encoded with a spectral codec of 4×64 codes.*dac with 12×1024"):
        finetune(config, progress=False)

    monkeypatch.setattr(memory, "available_bytes", lambda device, processes: 0.0)  # a device with no memory left
    config = FinetuneConfig(model=str(ckpt), corpus=str(corpus), out=str(tmp_path / "oom"), stage=stage(1, 1e-3))
    with pytest.raises(UniMoEError, match=r"training needs about .* per process but cpu has .*LoRA \(unimoe-audio"):
        finetune(config, progress=False)
    assert not (tmp_path / "oom" / "checkpoints").exists()
    monkeypatch.undo()

    dense = UniMoEAudioModel(UniMoEAudio.from_pretrained(ckpt).model.config.dense())
    with pytest.raises(UniMoEError, match="LoRA target 'routed' matches nothing"):
        apply_lora(dense, LoRASettings(("attention", "routed")))
    assert main(["finetune", "--model", str(ckpt), "--corpus", str(corpus), "--out", str(tmp_path / "y"), "--lora",
                 "--lora-targets", "attention,mlp"]) == 2
    assert "unknown LoRA target(s) ['mlp']" in capsys.readouterr().err
    assert main(["finetune", "--model", str(corpus), "--corpus", str(corpus), "--out", str(tmp_path / "z")]) == 2
    assert "is not a released UniMoE-Audio checkpoint" in capsys.readouterr().err
