"""Generation: delay-pattern rules, seeding, batching, guidance, Top-P override, the API and the CLI."""

from dataclasses import replace

import numpy as np
import soundfile as sf
import torch
import pytest

from unimoe_audio.cli.main import main
from unimoe_audio.errors import UniMoEError
from unimoe_audio.model import GenerationConfig, Generator, Request, UniMoEAudio, UniMoEAudioModel
from unimoe_audio.model.generate import sample
from unimoe_audio.model.sequence import FrontendPrompts

from .conftest import C, K, tiny_config


@pytest.fixture(scope="module")
def api(frontend, codec):
    torch.manual_seed(0)
    return UniMoEAudio(UniMoEAudioModel(tiny_config(frontend)), frontend, codec)


def requests(examples):
    return [Request.from_example(ex) for ex in examples]


def test_delayed_frames_follow_the_pattern(api, examples):
    config = GenerationConfig(max_frames=12, min_frames=5, seed=0)
    frames = eos_at = None
    for frames, eos_at, _ in api.generator.steps(requests(examples), config):
        pass
    pattern = api.generator.pattern
    assert ((eos_at >= 5) & (eos_at <= 12)).all()
    for b in range(len(examples)):
        e = int(eos_at[b])
        for k, d in enumerate(pattern.delays):
            row = frames[b, k]
            assert (row[:d] == pattern.bos).all()
            assert (row[d:e + d] < C).all()  # real codes until this codebook's EOS
            assert row[e + d] == pattern.eos
            assert (row[e + d + 1:] == pattern.pad).all()


def test_seeded_generation_repeats(api, examples):
    config = GenerationConfig(max_frames=10, seed=3)
    a = api.generator.run(requests(examples), config)
    b = api.generator.run(requests(examples), config)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert all(x.shape[0] == K for x in a)


def test_a_mixed_batch_equals_each_request_alone(api, examples):
    """Greedy decoding: left padding and batching must not change any row."""
    config = GenerationConfig(max_frames=8, temperature=0.0)
    together = api.generator.run(requests(examples), config)
    for req, codes in zip(requests(examples), together):
        assert torch.equal(api.generator.run([req], config)[0], codes)


@pytest.mark.parametrize("first", [2, 3])  # the clone prompt is the longest, the music's the shortest
def test_requests_joining_a_running_batch_get_what_they_get_alone(api, examples, first):
    """Continuous batching: requests that join between decode steps, with prompts longer or
    shorter than the batch's, each get exactly their greedy codes alone (guided rows included)."""
    config = GenerationConfig(max_frames=14, min_frames=6, temperature=0.0)
    reqs = requests(examples)
    batch = api.generator.decoding([reqs[first]], config, guided=True)
    codes = {i: [] for i in batch.ids}
    for step in range(12):
        if step in (3, 5):
            joining = [reqs[0]] if step == 3 else [reqs[5 - first], reqs[1]]
            codes.update({i: [] for i in batch.join(joining)})
        for i, (frame, _) in batch.step().items():
            codes[i].append(frame)
        batch.drop(batch.finished())
    while batch.ids:
        for i, (frame, _) in batch.step().items():
            codes[i].append(frame)
        batch.drop(batch.finished())
    order = [first, 0, 5 - first, 1]
    pattern = api.generator.pattern
    for i, r in enumerate(order):
        frames = torch.stack(codes[i], dim=-1)[None]
        alone = api.generator.run([reqs[r]], config)[0]
        assert torch.equal(pattern.revert(frames)[0, :, : alone.shape[1]], alone)
        assert frames.shape[-1] == alone.shape[1] + 1 + pattern.max_delay  # it left as soon as it ended


def test_a_batch_that_every_request_has_left_takes_new_ones(api, examples):
    """Joining is allowed between any two steps, also once the batch is empty."""
    config = GenerationConfig(max_frames=4, min_frames=4, temperature=0.0)
    reqs, pattern = requests(examples), api.generator.pattern
    batch = api.generator.decoding([reqs[0]], config)
    while batch.ids:
        batch.step()
        batch.drop(batch.finished())
    (i,) = batch.join([reqs[1]])
    frames = []
    while batch.ids:
        frames.append(batch.step()[i][0])
        batch.drop(batch.finished())
    alone = api.generator.run([reqs[1]], config)[0]
    assert torch.equal(pattern.revert(torch.stack(frames, dim=-1)[None])[0, :, : alone.shape[1]], alone)


def test_a_batch_that_requests_keep_joining_keeps_a_short_cache_and_exact_codes(api, examples):
    """A busy server's batch: for 60 steps a request joins whenever one leaves. Each still gets its
    greedy codes alone, and the KV cache keeps only what live rows attend to: never longer than
    the longest prompt plus one request's frames, however old the batch."""
    config = GenerationConfig(max_frames=6, min_frames=6, temperature=0.0)
    reqs, pattern = requests(examples), api.generator.pattern
    batch = api.generator.decoding(reqs[:2], config, guided=True)
    which, codes, done, longest = dict(zip(batch.ids, (0, 1))), {i: [] for i in batch.ids}, [], 0
    for step in range(60):
        for i, (frame, _) in batch.step().items():
            codes[i].append(frame)
        finished = batch.finished()
        batch.drop(finished)
        done += finished
        joining = [(step + j) % len(reqs) for j in range(len(finished))]
        for i, r in zip(batch.join([reqs[r] for r in joining]), joining):
            which[i], codes[i] = r, []
        longest = max(longest, batch.cache.length)
    prompt = max(api.generator.prompts.encode(r, c).tokens.shape[0] for r in reqs for c in (True, False))
    assert len(done) >= 10 and longest <= prompt + config.max_frames + 1 + pattern.max_delay
    alone = [api.generator.run([r], config)[0] for r in reqs]
    for i in done:
        aligned = pattern.revert(torch.stack(codes[i], dim=-1)[None])[0, :, : config.max_frames]
        assert torch.equal(aligned, alone[which[i]])


def test_guidance_scale_changes_the_output(api, examples):
    reqs = requests(examples)[3:]  # music
    plain = api.generator.run(reqs, GenerationConfig(max_frames=10, min_frames=10, temperature=0.0, guidance_scale=0.0))
    guided = api.generator.run(reqs, GenerationConfig(max_frames=10, min_frames=10, temperature=0.0, guidance_scale=5.0))
    assert not torch.equal(plain[0], guided[0])


def test_sampling_respects_top_k_and_per_codebook_settings():
    logits = torch.randn(64, 2, 10)
    out = sample(logits, torch.tensor([1.0, 0.0]), torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0]), None)
    top2 = logits[:, 0].topk(2).indices
    assert (out[:, 0:1] == top2).any(-1).all()
    assert torch.equal(out[:, 1], logits[:, 1].argmax(-1))  # temperature 0 = greedy


def test_moe_top_p_override_is_applied_and_restored(api, examples):
    moe = api.model.moe_layers()
    api.generator.run(requests(examples)[:1], GenerationConfig(max_frames=4, moe_top_p=0.2))
    assert all(m.top_p == m.config.top_p for m in moe)
    api.model.set_top_p(0.05)
    assert all(m.top_p == 0.05 for m in moe)
    api.model.set_top_p(None)


def test_api_speaks_clones_and_plays(api, tmp_path, codec):
    wave, rate = api.tts("The birch canoe.", language="en", speaker="en_slt", config=GenerationConfig(max_frames=6, seed=0))
    assert rate == 16_000 and wave.ndim == 1 and 0 < len(wave) <= 6 * 320
    prompt = tmp_path / "prompt.wav"
    sf.write(prompt, codec.decode(torch.randint(0, C, (1, K, 40)))[0].numpy(), 16_000)
    wave, _ = api.tts("Rice.", language="en", prompt_audio=prompt, prompt_text="Glue the sheet.",
                      config=GenerationConfig(max_frames=5, seed=0))
    assert len(wave) > 0
    wave, _ = api.music("A jig on violin.", duration=0.2)
    assert len(wave) == (10 - 1) * 320  # exactly duration · frame rate frames
    with pytest.raises(UniMoEError, match="either speaker"):
        api.tts("Hi.", language="en")


def test_decode_all_decodes_clips_of_equal_length_together_and_each_as_alone(api, monkeypatch):
    """One codec call per length, and every clip (also an empty or one-frame one) decoded exactly
    as it is alone."""
    gen = torch.Generator().manual_seed(0)
    codes = [torch.randint(0, C, (K, t), generator=gen) for t in (12, 0, 7, 12, 1, 7, 12)]
    alone = [api.codec.decode(c[None])[0].numpy() if c.shape[-1] else np.zeros(0, np.float32) for c in codes]
    calls, decode = [], api.codec.decode
    monkeypatch.setattr(api.codec, "decode", lambda batch: calls.append(len(batch)) or decode(batch))
    together = api.decode_all(codes)
    assert sorted(calls) == [1, 2, 3]
    assert all(np.array_equal(a, b) for a, b in zip(together, alone))


def test_streaming_yields_the_whole_clip_in_chunks(api, examples):
    config = GenerationConfig(max_frames=30, min_frames=30, seed=1)
    chunks = list(api.stream(requests(examples)[3], config, chunk_frames=8))
    full = api.generate([requests(examples)[3]], config)[0]
    assert len(chunks) >= 3 and sum(len(c) for c in chunks) == len(full)


def test_expected_output_is_the_guided_distribution_behind_each_chosen_code(api, examples):
    """Output "expected": per request the distribution over each code at each aligned frame (the
    delay pattern undone as for the codes), rows summing to 1; greedy codes are its arg-max, the
    codes themselves are unchanged, and the audio, stream and batch decode it."""
    reqs = requests(examples)
    config = GenerationConfig(max_frames=9, min_frames=4, temperature=0.0, guidance_scale=1.0)
    codes = api.generator.run(reqs, config)
    probs = api.generator.run(reqs, replace(config, output="expected"))
    for c, p in zip(codes, probs):
        assert p.shape == (*c.shape, C) and p.is_floating_point()
        assert torch.allclose(p.sum(-1), torch.ones(c.shape)) and torch.equal(p.argmax(-1), c)
    waves = api.decode_all(probs)
    assert [len(w) for w in waves] == [len(w) for w in api.decode_all(codes)]
    assert not np.allclose(waves[0], api.decode_all(codes)[0])  # the mean is not the arg-max
    music = replace(config, output="expected", max_frames=30, min_frames=30)
    chunks = list(api.stream(reqs[3], music, chunk_frames=8))
    full = api.generate([reqs[3]], music)[0]
    assert len(chunks) >= 3 and sum(len(c) for c in chunks) == len(full)
    with pytest.raises(UniMoEError, match="output must be one of"):
        GenerationConfig(output="mean")


def test_expected_output_is_refused_for_a_codec_that_decodes_codes_only(frontend, examples, tmp_path):
    from transformers import DacConfig, DacModel

    from unimoe_audio.codec import DacCodec

    DacModel(DacConfig(encoder_hidden_size=8, downsampling_ratios=[4, 5], decoder_hidden_size=16, n_codebooks=K,
                       codebook_size=C, codebook_dim=4, hidden_size=16, sampling_rate=16_000)).save_pretrained(tmp_path)
    dac = DacCodec.from_pretrained(tmp_path)
    api = UniMoEAudio(UniMoEAudioModel(tiny_config(frontend)), frontend, dac)
    with pytest.raises(UniMoEError, match="decodes codes only"):
        api.generate(requests(examples)[:1], GenerationConfig(max_frames=3, output="expected"))


def test_each_request_keeps_its_own_length_in_a_shared_batch(api, examples):
    tts, music = requests(examples)[0], requests(examples)[3]
    tts.max_frames, music.max_frames, music.min_frames = 5, 12, 12
    config = GenerationConfig(max_frames=40, temperature=0.0)
    speech, played = api.generator.run([tts, music], config)
    assert speech.shape[-1] <= 5 and played.shape[-1] == 12
    assert torch.equal(api.generator.run([music], config)[0], played)


def test_cancelled_requests_leave_the_batch_and_the_others_are_unchanged(api, examples):
    config = GenerationConfig(max_frames=10, min_frames=10, temperature=0.0)
    reqs = requests(examples)
    expected = api.generator.run(reqs, config)
    cancelled, steps = set(), 0
    for steps, (frames, eos_at, _) in enumerate(api.generator.steps(reqs, config, cancelled), start=1):
        if steps == 3:
            cancelled.update({0, 2})
    aligned = api.generator.pattern.revert(frames)
    for i in (1, 3):
        assert torch.equal(aligned[i, :, : int(eos_at[i])], expected[i])
    cancelled, steps = set(), 0
    for steps, _ in enumerate(api.generator.steps(reqs, config, cancelled), start=1):
        cancelled.update(range(len(reqs)))
    assert steps == 1  # nobody left: generation stops at once


def test_audio_chunks_whole_clip_mode_equals_generate(api, examples):
    from unimoe_audio.model import AudioChunks

    config = GenerationConfig(max_frames=12, min_frames=12, seed=2)
    audio, waves = AudioChunks(api, chunk_frames=None), []
    for frames, eos_at, _ in api.generator.steps([requests(examples)[3]], config):
        wave = audio.push(frames[0], int(eos_at[0]))
        assert wave is None or audio.finished
        waves += [] if wave is None else [wave]
    assert len(waves) == 1 and (waves[0] == api.generate([requests(examples)[3]], config)[0]).all()


def test_generate_cli(api, tmp_path, capsys):
    api.save_pretrained(tmp_path / "model")
    out = tmp_path / "speech.wav"
    assert main(["generate", "--model", str(tmp_path / "model"), "--task", "tts", "--text", "The birch canoe.",
                 "--speaker", "en_slt", "--seed", "0", "-o", str(out)]) == 0
    assert sf.info(out).samplerate == 16_000 and "real-time factor" in capsys.readouterr().out
    assert main(["generate", "--model", str(tmp_path / "model"), "--task", "music", "--caption", "jig",
                 "--duration", "0.3", "-o", str(tmp_path / "music.wav")]) == 0
    assert main(["generate", "--model", str(tmp_path / "model"), "--task", "music", "--caption", "jig",
                 "--duration", "0.3", "--audio-from", "expected", "-o", str(tmp_path / "mean.wav")]) == 0
    assert sf.info(tmp_path / "mean.wav").frames == sf.info(tmp_path / "music.wav").frames
    assert main(["generate", "--model", str(tmp_path / "model"), "--task", "tts", "--text", "Hi.",
                 "--speaker", "nobody", "-o", str(out)]) == 2
    assert "unknown speaker" in capsys.readouterr().err


def test_a_model_carries_its_own_sampling_defaults_per_task(frontend, codec, tmp_path):
    """generation_config.json: saved and loaded with the model, used by `default_config` (so by the
    CLI, the server, eval and the quickstart) for its tasks only; a bad file is named."""
    torch.manual_seed(0)
    api = UniMoEAudio(UniMoEAudioModel(tiny_config(frontend)), frontend, codec,
                      generation={"tts": {"temperature": 0, "output": "expected"}})
    loaded = UniMoEAudio.from_pretrained(api.save_pretrained(tmp_path / "model"))
    assert loaded.generation == api.generation
    speech, music = loaded.default_config("tts", "Hello there."), loaded.default_config("t2m", duration=1.0)
    assert (speech.temperature, speech.output, speech.max_frames) == (0, "expected", loaded.speech_budget("Hello there.", "en"))
    assert (music.temperature, music.output, music.max_frames) == (1.0, "codes", 50)
    assert UniMoEAudio.from_pretrained(UniMoEAudio(api.model, frontend, codec).save_pretrained(tmp_path / "plain")).generation == {}
    for bad, message in [('{"tts": {"temperature": 0, "beam": 4}}', "unknown settings"), ('{"sing": {}}', "unknown task"),
                         ('{"tts": {"output": "mean"}}', "output must be"), ('["tts"]', "must map tasks"), ("{", "not valid JSON")]:
        (tmp_path / "model" / "generation_config.json").write_text(bad)
        with pytest.raises(UniMoEError, match=message):
            UniMoEAudio.from_pretrained(tmp_path / "model")


def test_a_reader_that_stops_reading_ends_the_cli_quietly(api, tmp_path):
    """`unimoe-audio … | head`: output into a closed pipe ends the command with 141 and no traceback."""
    import subprocess
    import sys

    api.save_pretrained(tmp_path / "model")
    cli = [sys.executable, "-c", "import sys; from unimoe_audio.cli.main import main; sys.exit(main())"]
    p = subprocess.Popen([*cli, "generate", "--model", str(tmp_path / "model"), "--task", "tts", "--list-speakers"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # closed before the model has loaded, so the speakers go into a broken pipe
    assert p.wait(timeout=120) == 141 and p.stderr.read() == b""


def test_guidance_zero_in_a_guided_batch_equals_the_conditional_model_alone(api, examples):
    tts, music = requests(examples)[0], requests(examples)[3]
    tts.guidance_scale, music.guidance_scale = 0.0, 3.0
    config = GenerationConfig(max_frames=8, temperature=0.0)
    batched = api.generator.run([tts, music], config)[0]  # conditional and unconditional rows for both
    alone = api.generator.run([tts], config)[0]  # scale 0 only: no unconditional row at all
    assert torch.equal(batched, alone)


def test_a_tiny_model_overfits_and_greedy_generation_reproduces_its_item(frontend, examples):
    torch.manual_seed(0)
    from unimoe_audio.codec import DelayPattern
    from unimoe_audio.model import SequenceCollator

    model = UniMoEAudioModel(tiny_config(frontend, "dense"))
    collate = SequenceCollator(FrontendPrompts(frontend, DelayPattern(model.config.delays, C)))
    item = examples[0]
    batch = collate([item])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = model(**batch).codec_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * K
    model.eval()
    prompts = FrontendPrompts(frontend, DelayPattern(model.config.delays, model.config.codebook_size))
    codes = Generator(model, prompts).run([Request.from_example(item)],
                                          GenerationConfig(max_frames=40, temperature=0.0, guidance_scale=0.0))[0]
    assert torch.equal(codes, item.codes)


@pytest.mark.parametrize("call, message", [
    (lambda api, p: api.tts("", language="en", speaker="en_slt"), "empty"),
    (lambda api, p: api.tts("؟؟", language="en", speaker="en_slt"), "cannot read"),
    (lambda api, p: api.tts("abc", language="zh", speaker="zh_m1"), "cannot read"),
    (lambda api, p: api.tts("Hi.", language="fr", speaker="en_slt"), "language"),
    (lambda api, p: api.tts("Hi.", language="en", speaker="nobody"), "unknown speaker"),
    (lambda api, p: api.tts("word " * 400, language="en", speaker="en_slt"), "positions"),
    (lambda api, p: api.music("jig", duration=60), "positions"),
    (lambda api, p: api.music("jig", duration=-1), "duration"),
    (lambda api, p: api.music("jig", duration=float("nan")), "duration"),
    (lambda api, p: api.music("jig", duration=float("inf")), "duration"),
    (lambda api, p: api.music("jig", config=GenerationConfig(temperature=float("nan"))), "temperature must be a finite"),
    (lambda api, p: api.music("jig", config=GenerationConfig(guidance_scale=float("nan"))), "guidance_scale must be a finite"),
    (lambda api, p: GenerationConfig(top_p=[1.0, float("nan"), 1.0, 1.0]), "top_p must be a finite"),
    (lambda api, p: api.music("ΩΩΩΩ jig", duration=0.1), r"4 of its 8 symbols are unknown to this model \(ω\)"),
    (lambda api, p: api.tts("你好", language="zh", speaker="en_slt"), "speaks en, not zh; choose one of zh_m1"),
    (lambda api, p: api.tts("我有apple", language="zh", speaker="zh_m1"), "a p l e are not Chinese characters"),
    (lambda api, p: api.tts("Hi.", language="en", prompt_audio=p["silent"], prompt_text="Glue."), "silent"),
    (lambda api, p: api.tts("Hi.", language="en", prompt_audio=p["short"], prompt_text="Glue."), "long"),
    (lambda api, p: api.tts("Hi.", language="en", prompt_audio=p["long"], prompt_text="Glue."), "long"),
    (lambda api, p: api.tts("Hi.", language="en", prompt_audio=p["broken"], prompt_text="Glue."), "cannot read"),
    (lambda api, p: api.generate([Request(task="speak")]), "task"),
    (lambda api, p: api.generate([Request(task="t2m", caption="jig", video=torch.zeros(2, 28, 28, 3, dtype=torch.uint8))]),
     "takes no video"),
])
def test_bad_input_gets_a_clear_error(api, tmp_path, call, message):
    import numpy as np

    paths = {name: tmp_path / f"{name}.wav" for name in ("silent", "short", "long", "broken")}
    sf.write(paths["silent"], np.zeros(16_000, np.float32), 16_000)
    sf.write(paths["short"], np.random.default_rng(0).normal(0, 0.1, 3_000).astype(np.float32), 16_000)
    sf.write(paths["long"], np.random.default_rng(0).normal(0, 0.1, 16_000 * 25).astype(np.float32), 16_000)
    paths["broken"].write_bytes(b"RIFF not really a wave file")
    with pytest.raises(UniMoEError, match=message):
        call(api, paths)


def test_mandarin_digits_are_spelled_not_dropped():
    from unimoe_audio.model.frontend import mandarin_pinyin

    assert mandarin_pinyin("我有3个，好！") == "wo3 you3 san1 ge4 hao3"
    assert mandarin_pinyin("２０２４年") == mandarin_pinyin("二零二四年")  # full-width digits too


def test_a_stereo_prompt_in_soundfiles_layout_is_a_voice_prompt(api, codec):
    import numpy as np

    wave = codec.decode(torch.randint(0, C, (1, K, 40)))[0].numpy()  # 0.78 s
    stereo = np.stack([wave, 0.5 * wave], axis=1)  # [T, C], as sf.read returns it
    request = api.request("clone", text="Rice.", language="en", prompt_audio=(stereo, 16_000), prompt_text="Glue.")
    assert torch.equal(request.prompt_codes, codec.encode(0.75 * wave, 16_000)[0])


def test_a_given_config_keeps_the_duration_and_the_speech_budget(api):
    wave, rate = api.music("A jig on violin.", duration=0.2, config=GenerationConfig(max_frames=50, min_frames=50, seed=0))
    assert len(wave) == (10 - 1) * 320  # the duration's 10 frames, not the config's 50
    budget = api.speech_budget("Hi.", "en")
    wave, _ = api.tts("Hi.", language="en", speaker="en_slt", config=GenerationConfig(max_frames=300, min_frames=300, seed=0))
    assert budget < 300 and len(wave) <= budget * 320


def test_moe_top_p_is_refused_where_no_router_uses_it(frontend, codec, examples):
    from dataclasses import replace

    dense = UniMoEAudio(UniMoEAudioModel(tiny_config(frontend, ffn="dense")), frontend, codec)
    topk = tiny_config(frontend)
    topk = UniMoEAudio(UniMoEAudioModel(replace(topk, moe=replace(topk.moe, routing="top_k", top_k=2))), frontend, codec)
    for api, kind in ((dense, "a dense model"), (topk, "route Top-K")):
        with pytest.raises(UniMoEError, match=f"moe_top_p .*{kind}"):
            api.generate(requests(examples)[:1], GenerationConfig(max_frames=4, moe_top_p=0.5))


def test_unseeded_generation_leaves_the_callers_random_state_alone(api, examples):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    api.generate(requests(examples)[:1], GenerationConfig(max_frames=4))
    assert torch.equal(torch.get_rng_state(), before)


def test_quickstart_samples_only_what_the_corpus_has(api, tmp_path, capsys):
    import json

    from unimoe_audio.workflows.quickstart import samples

    english = {"id": "e", "task": "tts", "group": "speech-en", "language": "en", "text": "Hi.", "speaker": "en_slt",
               "audio": "e.wav"}
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text(json.dumps(english) + "\n")
    clips = samples(api, tmp_path, tmp_path / "samples", seed=0)
    assert set(clips) == {"speech-en"} and (tmp_path / "samples" / "samples.png").is_file()
    out = capsys.readouterr().out
    assert "no speech-zh clip: the corpus has no zh speaker" in out and "no music clip" in out


def test_eval_generates_music_for_an_entry_without_a_duration(api, tmp_path):
    """`duration` is optional in a hand-written manifest: the clip is as long as eval's music limit."""
    from unimoe_audio.eval.suite import generate_split

    entry = {"id": "m", "task": "t2m", "group": "music", "language": None, "caption": "A jig on violin.", "audio": "m.wav"}
    generated = generate_split(api, tmp_path, [entry], tmp_path / "out", seed=0, max_music_seconds=0.2, progress=False)
    assert generated["m"]["seconds"] == (10 - 1) * 320 / 16_000 and generated["m"]["path"].is_file()
