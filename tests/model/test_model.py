"""The transformer, the sequence format and the training forward."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from unimoe_audio.codec import DelayPattern
from unimoe_audio.errors import UniMoEError
from unimoe_audio.model import (DEFAULT_MODEL, IGNORE, FrontendPrompts, KVCache, SequenceCollator, UniMoEAudioConfig, UniMoEAudioModel, load_model,
                                save_model)
from unimoe_audio.model import pipeline
from unimoe_audio.model.frontend import TextFrontend, english_ipa, mandarin_pinyin, phonemize

from .conftest import K, tiny_config


def make(frontend, ffn="moe", seed=0):
    torch.manual_seed(seed)
    config = tiny_config(frontend, ffn)
    return UniMoEAudioModel(config).eval(), SequenceCollator(FrontendPrompts(frontend, DelayPattern(config.delays, config.codebook_size)))


def test_presets_build_the_paper_shape():
    paper = UniMoEAudioConfig.preset("paper")
    assert (paper.hidden_size, paper.num_layers, paper.num_heads, paper.num_kv_heads, paper.head_dim) == (2048, 36, 16, 2, 128)
    assert (paper.moe.num_routed, paper.moe.num_null, paper.moe.num_shared, paper.moe.top_p) == (8, 1, 2, 0.7)
    assert paper.delays == (0, *range(8, 19)) and paper.audio_vocab_size == 1027
    tiny = UniMoEAudioModel(UniMoEAudioConfig.preset("tiny"))
    assert 1e6 < sum(p.numel() for p in tiny.parameters()) < 2e7


@pytest.mark.parametrize("changes, message", [
    (dict(hidden_size=30), "hidden_size"), (dict(num_kv_heads=3), "divisible"), (dict(ffn="conv"), "ffn"),
    (dict(delays=(0, 1)), "delays"), (dict(cond_dropout=1.5), "cond_dropout"), (dict(audio_noise=1.0), "audio_noise")])
def test_invalid_configs_name_the_problem(frontend, changes, message):
    with pytest.raises(UniMoEError, match=message):
        tiny_config(frontend, **changes)


def test_front_end_uses_phonemes_and_pinyin(frontend):
    assert "ð" in english_ipa("the") and mandarin_pinyin("你好") == "ni3 hao3"
    with pytest.raises(UniMoEError, match="unknown speaker"):
        frontend.speaker("nobody")
    with pytest.raises(UniMoEError, match="empty"):
        frontend.speech_text("   ", "en")


def test_fit_reads_every_text_prompt_and_caption_and_names_a_bad_one():
    from .conftest import ENTRIES
    fitted = TextFrontend.fit(ENTRIES)
    for e in ENTRIES:
        spoken = [phonemize(e[k], e["language"]) for k in ("text", "prompt_text") if e.get(k)]
        assert all(ch in fitted.ids for text in [*spoken, (e.get("caption") or "").lower()] for ch in text)
    assert "ɡ" in fitted.ids and "3" in fitted.ids  # only in "glue" (a prompt text); a pinyin tone
    with pytest.raises(UniMoEError, match="abc"):
        TextFrontend.fit([*ENTRIES, {"task": "tts", "language": "zh", "text": "你好abc", "speaker": "zh_m1"}])


def test_loss_covers_audio_targets_only(frontend, examples):
    _, collate = make(frontend)
    batch = collate(examples)
    targets, is_audio = batch["targets"], batch["is_audio"]
    has_target = (targets != IGNORE).any(1)
    # Targets sit on audio positions only (the BOS frame onwards), never on padding.
    assert not (has_target & batch["pad_mask"]).any()
    assert (has_target <= is_audio).all()
    # Each example predicts T + 1 (EOS) frames per codebook: BOS/PAD of the delay pattern carry no loss.
    for i, ex in enumerate(examples):
        assert ((targets[i] != IGNORE).sum(-1) == ex.codes.shape[1] + 1).all()
        assert (targets[i] == collate.pattern.eos).sum() == K


@pytest.mark.parametrize("ffn", ["dense", "moe"])
def test_padding_does_not_change_an_example_loss(frontend, examples, ffn):
    model, collate = make(frontend, ffn)
    together = model(**collate(examples)).example_losses
    alone = torch.stack([model(**collate([ex])).example_losses[0] for ex in examples])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)


def test_forward_reports_losses_and_aux(frontend, examples):
    model, collate = make(frontend)
    model.train()
    out = model(**collate(examples), aux_weight=0.5)
    assert out.codebook_losses.shape == (K,)
    torch.testing.assert_close(out.codec_loss, out.codebook_losses.sum())
    torch.testing.assert_close(out.loss, out.codec_loss + 0.5 * out.aux_loss)
    assert out.aux_loss > 0 and 0 < out.experts_per_token <= 4
    out.loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "gate" in n and "layers" in n)


def test_condition_dropout_removes_text_and_caption(frontend, examples):
    pattern = DelayPattern((0, 1, 2, 3), 64)
    always = SequenceCollator(FrontendPrompts(frontend, pattern), cond_dropout=0.999)(examples, np.random.default_rng(0))
    never = SequenceCollator(FrontendPrompts(frontend, pattern), cond_dropout=0.0)(examples, np.random.default_rng(0))
    text_len = lambda b: (~b["is_audio"] & ~b["pad_mask"]).sum(1)
    assert (text_len(always) < text_len(never)).all()


def test_audio_noise_changes_input_codes_only(frontend, examples):
    """Noise replaces about the asked share of the generated audio's input codes, with codes; the
    targets, the text and the specials stay; evaluation (no generator) sees clean input."""
    pattern = DelayPattern((0, 1, 2, 3), 64)
    prompts = FrontendPrompts(frontend, pattern)
    clean = SequenceCollator(prompts)(examples, np.random.default_rng(0))
    noisy = SequenceCollator(prompts, audio_noise=0.4)(examples, np.random.default_rng(0))
    for key in ("tokens", "targets", "is_audio", "pad_mask"):
        assert torch.equal(clean[key], noisy[key]), key
    codes = clean["audio"] < pattern.codebook_size
    changed = clean["audio"] != noisy["audio"]
    assert not (changed & ~codes).any()  # BOS, EOS, PAD and text positions untouched
    assert (noisy["audio"][changed] < pattern.codebook_size).all()
    share = changed.sum() / codes.sum()
    assert 0.4 * (1 - 1 / 64) - 0.08 < share < 0.4 + 0.08
    assert torch.equal(SequenceCollator(prompts, audio_noise=0.4)(examples)["audio"], clean["audio"])


def test_kv_cache_matches_the_full_forward(frontend, examples):
    model, collate = make(frontend)
    batch = collate(examples[:1])
    n = int((~batch["pad_mask"]).sum())
    tokens, audio, is_audio = batch["tokens"][:, :n], batch["audio"][:, :, :n], batch["is_audio"][:, :n]
    with torch.no_grad():
        full, _, _ = model.hidden(tokens, audio, is_audio)
        cache = KVCache(model.config, 1, n, "cpu", torch.float32)
        split = n // 2
        mask = torch.ones(split, split, dtype=torch.bool).tril()[None, None]
        cache.key_valid[:, :n] = True
        first, _, _ = model.hidden(tokens[:, :split], audio[:, :, :split], is_audio[:, :split], cache=cache, attn_mask=mask)
        cache.length = split
        steps = []
        for i in range(split, n):
            h, _, _ = model.hidden(tokens[:, i:i + 1], audio[:, :, i:i + 1], is_audio[:, i:i + 1],
                                positions=torch.tensor([[i]]), cache=cache,
                                attn_mask=cache.key_valid[:, None, None, :i + 1])
            cache.length += 1
            steps.append(h)
    torch.testing.assert_close(torch.cat([first, *steps], 1), full, rtol=1e-4, atol=1e-4)


def test_save_and_load_round_trip(frontend, examples, tmp_path):
    model, collate = make(frontend)
    save_model(tmp_path, model, frontend)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "model.safetensors", "frontend.json"}
    loaded, loaded_frontend = load_model(tmp_path)
    assert loaded_frontend.vocab == frontend.vocab
    batch = collate(examples)
    torch.testing.assert_close(loaded(**batch).example_losses, model(**batch).example_losses)
    other, _ = make(frontend, "dense")
    save_model(tmp_path / "dense", other, frontend)
    (tmp_path / "dense" / "model.safetensors").replace(tmp_path / "model.safetensors")
    with pytest.raises(UniMoEError, match="does not match"):
        load_model(tmp_path)


def test_half_precision_storage_loads_into_float32(frontend, examples, tmp_path):
    model, collate = make(frontend)
    save_model(tmp_path, model, frontend, dtype=torch.float16)
    stored = load_file(str(tmp_path / "model.safetensors"))
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    loaded, _ = load_model(tmp_path)
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value.half().float()), name
    batch = collate(examples)
    torch.testing.assert_close(loaded(**batch).example_losses, model(**batch).example_losses, rtol=1e-2, atol=1e-2)


def test_a_shipped_model_loads_by_name(frontend, tmp_path, monkeypatch):
    model, _ = make(frontend)
    save_model(tmp_path / "shipped" / "small-one", model, frontend)
    monkeypatch.setattr(pipeline, "SHIPPED", tmp_path / "shipped")
    monkeypatch.chdir(tmp_path)
    loaded, _ = load_model("small-one")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    with pytest.raises(UniMoEError, match="no model at other-one.*shipped: small-one"):
        load_model("other-one")
    monkeypatch.setattr(pipeline, "SHIPPED", tmp_path / "none-shipped")
    with pytest.raises(UniMoEError, match="ships no trained model yet.*--model DIR"):
        load_model(DEFAULT_MODEL)
