"""The released checkpoint: this project against outputs of the released code (tests/fixtures/released).

The fixtures were made by make_fixtures.py running the released model code on the tiny
released-format checkpoint that tiny.py rebuilds here from its seed (float32, CPU).
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unimoe_audio.codec import DelayPattern
from unimoe_audio.model import GenerationConfig, Generator, IGNORE, Request
from unimoe_audio.model.released import ReleasedPrompts, load_released_model, load_tokenizer, released_config
from unimoe_audio.io import read_config
from unimoe_audio.model.released.checkpoint import target
from unimoe_audio.moe.routing import official_weights

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "released"
_spec = importlib.util.spec_from_file_location("released_tiny", FIXTURES / "tiny.py")
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)
LAYOUT = json.loads((FIXTURES / "layout.json").read_text())
GENERATION = json.loads((FIXTURES / "generation.json").read_text())


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny.write_checkpoint(tmp_path_factory.mktemp("released"), LAYOUT, seed=0)


@pytest.fixture(scope="module")
def loaded(folder):
    config, spec = released_config(read_config(folder), str(folder))
    return load_released_model(folder, config), config, spec


def close(actual, expected, tol):
    assert actual.shape == expected.shape
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= tol, err


def test_forward_matches_released_logits_hidden_states_loss_and_every_routing_decision(loaded):
    model, config, spec = loaded
    fx = load_file(str(FIXTURES / "forward.safetensors"))
    ids, valid = fx["input_ids"], fx["attention_mask"].bool()
    b, n = ids.shape
    is_audio = ids == spec.placeholder_id
    audio = torch.full((b, config.num_codebooks, n), 1025)
    audio.permute(0, 2, 1)[is_audio] = fx["codec_input_ids"]  # placeholders in row-major order
    labels = fx["codec_labels"].permute(0, 2, 1)  # [B, K, L]: position i's label; logits at i predict i + 1
    targets = torch.full_like(labels, IGNORE)
    targets[:, :, :-1] = labels[:, :, 1:]
    with torch.no_grad():
        hidden, moe, _ = model.hidden(ids, audio, is_audio, pad_mask=~valid)
        out = model(ids, audio, is_audio, targets, ~valid, aux_weight=float(fx["aux_weight"]))
    close(hidden[valid], fx["hidden_states"][-1][valid], 1e-4)
    close(model.logits(hidden)[valid].float(), fx["codec_logits"][valid], 1e-4)
    assert torch.allclose(out.loss, fx["loss"][0], rtol=1e-5, atol=0)
    assert torch.allclose(out.aux_loss, fx["aux_loss"][0], rtol=1e-5, atol=0)
    flat = valid.reshape(-1)
    dyn = config.moe.num_dynamic
    for layer, m in enumerate(moe):
        close(m.router_logits[flat], fx["router_logits"][layer][flat], 1e-4)
        assert torch.equal(m.expert_mask, fx["expert_mask"][layer][:, :dyn].bool())  # pads: nothing selected
        assert torch.equal(m.expert_mask[flat].sum(-1), fx["router_top_k"][layer][flat].long())
        logits = m.router_logits[flat]
        routed, shared = official_weights(logits[:, :dyn], logits[:, dyn:], m.expert_mask[flat])
        close(torch.cat([routed, shared], -1), fx["router_weight"][layer][flat], 1e-5)
    assert any((m.expert_mask.sum(-1) > 2).any() and (m.expert_mask[flat].sum(-1) == 1).any() for m in moe)


def test_moe_block_in_train_mode_matches_released_output_aux_loss_and_gradients(loaded):
    model, config, _ = loaded
    fx = load_file(str(FIXTURES / "moe_block.safetensors"))
    moe = model.layers[1].ffn
    assert moe.config.router_jitter == 0.0  # the fixture's config: jitter-free, hence deterministic
    params = dict(moe.named_parameters())
    for p in params.values():
        p.requires_grad_(True)
        p.grad = None
    x = fx["x"].clone().requires_grad_(True)
    valid = fx["padding"]
    moe.train()
    try:
        out = moe(x, pad_mask=~valid)
        ((out.hidden_states * fx["probe"]).sum() + 0.5 * out.aux_loss).backward()
    finally:
        moe.eval()
    close(out.hidden_states[valid].detach(), fx["y"][valid], 1e-5)
    assert torch.equal(out.expert_mask, fx["expert_mask"][:, :config.moe.num_dynamic].bool())
    assert torch.allclose(out.aux_loss.detach(), fx["aux_loss"][0], rtol=1e-5, atol=0)
    close(x.grad[valid], fx["grad.x"][valid], 1e-5)
    checked = 0
    for name, grad in fx.items():
        if not name.startswith("grad.") or name == "grad.x":
            continue
        t = target("model.layers.1.mlp." + name[5:], config)
        mine = params[t.name.removeprefix("layers.1.ffn.")].grad
        if t.join == "stack":
            mine = mine[t.index]
        elif t.join:
            mine = mine.chunk(t.parts, dim=0 if t.join == "rows" else 1)[t.index]
        close(mine, grad, 1e-5)
        checked += 1
    assert checked == 1 + 3 * (config.moe.num_routed + config.moe.num_shared)  # every released parameter of the block


@pytest.fixture(scope="module")
def released_generator(loaded, folder):
    model, config, spec = loaded
    pattern = DelayPattern(config.delays, config.codebook_size)
    return Generator(model, ReleasedPrompts(load_tokenizer(folder, spec), spec, pattern))


def requests_of(case):
    if case["settings"]["task"] == "music":
        return [Request("t2m", caption=c) for c in case["inputs"]]
    voice = torch.tensor(case["voice_codes"]).T  # [12, T]
    return [Request("clone", text=t, language="en", prompt_text=case["prompt_text"], prompt_codes=voice)
            for t in case["inputs"]]


def config_of(case):
    s = case["settings"]
    greedy = s.get("do_sample") is False
    return GenerationConfig(decoding="released", max_frames=s["max_tokens"] - 19, min_frames=s["min_tokens"],
                            temperature=0.0 if greedy else s.get("temperature", 1.0), top_k=s.get("cfg_filter_top_k", 45),
                            top_p=s.get("top_p", 1.0), seed=s["seed"])


@pytest.mark.parametrize("case", GENERATION, ids=[c["name"] for c in GENERATION])
def test_prompts_are_the_released_token_ids_and_voice_prompt_frames(case, released_generator):
    prompts = released_generator.prompts
    ids, mask = torch.tensor(case["input_ids"]), torch.tensor(case["attention_mask"]).bool()
    rows = []
    for r in requests_of(case):
        rows += [prompts.encode(r, False), prompts.encode(r, True)]  # released rows: [uncond, cond] per item
    for i, seg in enumerate(rows):
        assert seg.tokens[:-1].tolist() == ids[i][mask[i]].tolist()
        assert seg.tokens[-1] == prompts.audio_id and (seg.audio[:, -1] == 1026).all()  # the BOS frame
    if case["settings"]["task"] == "speech":
        voice = torch.tensor(case["codec_input_ids"]).view(len(rows), -1, 12)
        for i, seg in enumerate(rows):
            assert torch.equal(seg.audio[:, seg.is_audio][:, :-1].T, voice[i])


@pytest.mark.parametrize("case", GENERATION, ids=[c["name"] for c in GENERATION])
def test_generation_reproduces_the_released_codes_and_lengths(case, released_generator):
    codes = released_generator.run(requests_of(case), config_of(case))
    assert [c.shape[-1] for c in codes] == case["lengths"]
    for mine, theirs in zip(codes, case["codes"]):
        assert mine.tolist() == theirs


def test_fixture_batches_stop_at_different_steps():
    assert any(len(set(c["lengths"])) > 1 and min(c["lengths"]) > 0 for c in GENERATION if c["settings"]["seed"])
    assert {c["settings"]["task"] for c in GENERATION} == {"music", "speech"}
