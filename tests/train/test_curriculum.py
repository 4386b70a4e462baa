"""The curriculum end to end, the warm-up's frozen parameters, exact resume and 2-process training."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
import yaml

from unimoe_audio.codec import SpectralCodec, load_codec
from unimoe_audio.data import TokenDataset
from unimoe_audio.errors import UniMoEError
from unimoe_audio.model import GenerationConfig, UniMoEAudio
from unimoe_audio.train.config import StageConfig, recipe_from_dict
from unimoe_audio.train.curriculum import fresh, moe_config, prepare, run_delays, run_recipe
from unimoe_audio.train.distributed import DistInfo
from unimoe_audio.train.trainer import Trainer, read_metrics, reversed_words
from unimoe_audio.train.upcycle import freeze_for_warmup, upcycle, warmup_parameters

from .processes import killed_at

MODEL = {"preset": "tiny", "hidden_size": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2,
         "intermediate_size": 32, "max_positions": 512}
STAGE = {"steps": 3, "lr": 1e-3, "batch_size": 4, "eval_every": 3, "eval_batches": 1, "checkpoint_every": 3}


def recipe_dict(corpus, out, **extra):
    return {"name": "test", "out": str(out), "corpus": {"path": str(corpus)}, "model": MODEL,
            "moe": {"slices_per_specialist": 2, "num_shared": 1}, "max_music_frames": 20,
            "stages": {"specialists": STAGE, "warmup": {**STAGE, "mix": "balanced", "subset": 0.5},
                       "joint": {**STAGE, "mix": "balanced", "aux_steps": 3}}, **extra}


def test_whole_curriculum_then_baselines(corpus, tmp_path):
    baselines = {name: {**STAGE, "mix": "natural" if name == "naive-joint" else "balanced"}
                 for name in ("naive-joint", "dense-balanced", "top-k", "scratch")}
    recipe = recipe_from_dict(recipe_dict(corpus, tmp_path / "run", baselines=baselines))
    summary = run_recipe(recipe, progress=False)
    systems = summary["systems"]
    expected = {"specialists/speech-en", "specialists/speech-zh", "specialists/music", "warmup", "joint",
                *(f"baselines/{b}" for b in baselines)}
    assert set(systems) == expected
    assert {"speech-en", "speech-zh", "music"} <= set(systems["joint"])
    assert (tmp_path / "run" / "curriculum-loss.png").stat().st_size > 0
    joint = UniMoEAudio.from_pretrained(tmp_path / "run" / "joint" / "model")
    assert len(joint.model.moe_layers()) == 2 and joint.model.moe_layers()[0].config.num_routed == 6
    topk = UniMoEAudio.from_pretrained(tmp_path / "run" / "baselines" / "top-k" / "model").model.moe_layers()[0]
    assert topk.config.routing == "top_k"
    dense = UniMoEAudio.from_pretrained(tmp_path / "run" / "baselines" / "dense-balanced" / "model").model
    moe = moe_config(prepare(recipe, DistInfo(), progress=False))
    assert dense.config.intermediate_size == moe.num_routed * moe.routed_size + moe.num_shared * moe.shared_size
    # Re-running finds every stage finished and trains nothing more.
    stamp = (tmp_path / "run" / "joint" / "model" / "model.safetensors").stat().st_mtime_ns
    assert run_recipe(recipe, progress=False) == summary
    assert (tmp_path / "run" / "joint" / "model" / "model.safetensors").stat().st_mtime_ns == stamp
    changed = recipe_from_dict(recipe_dict(corpus, tmp_path / "run", seed=5))
    with pytest.raises(UniMoEError, match="different recipe"):
        run_recipe(changed, progress=False)


def test_warmup_trains_only_gates_and_shared_experts(corpus, tmp_path):
    recipe = recipe_from_dict(recipe_dict(corpus, tmp_path / "run"))
    run = prepare(recipe, DistInfo(), progress=False)
    specialists = [fresh(run, run.base) for _ in run.groups]
    for i, s in enumerate(specialists):  # distinct specialists, so averaging is visible
        torch.nn.init.normal_(s.embed_text.weight, std=0.1 * (i + 1))
    from dataclasses import replace
    model = upcycle(specialists, fresh(run, replace(run.base, ffn="moe", moe=moe_config(run))))
    torch.testing.assert_close(model.embed_text.weight, torch.stack([s.embed_text.weight for s in specialists]).mean(0))
    trainable = set(freeze_for_warmup(model))
    assert trainable == set(warmup_parameters(model)) and all(".ffn." in n for n in trainable)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = Trainer(model, StageConfig(**{**STAGE, "steps": 2}), run.train_set, run.collate, tmp_path / "w",
                      progress=False)
    trainer.fit()
    for name, p in model.named_parameters():
        moved = not torch.equal(before[name], p.detach())
        assert moved == (name in trainable), name


def _trainer(run, out, steps=4):
    config = StageConfig(steps=steps, lr=1e-3, batch_size=4, grad_accum=2, checkpoint_every=2, eval_every=2,
                         eval_batches=1, mix="balanced")
    from dataclasses import replace
    model = fresh(run, replace(run.base, ffn="moe", moe=moe_config(run)))  # router jitter and dropout use RNG
    return Trainer(model, config, run.train_set, run.collate, out, val_set=run.val_set, seed=0, progress=False)


def test_validation_reports_what_the_condition_is_worth(corpus, tmp_path):
    """cond_gain/<group>: the unconditional form's loss minus the conditional one, on the same items;
    read_gain/<group> (speech): the loss with the text's words reversed minus the loss."""
    run = prepare(recipe_from_dict(recipe_dict(corpus, tmp_path / "run")), DistInfo(), progress=False)
    trainer = _trainer(run, tmp_path / "a")
    metrics = trainer.evaluate()
    for g in run.groups:
        examples = [run.val_set[i] for i, x in enumerate(run.val_set.groups) if x == g][:trainer.micro_batch]
        with torch.no_grad():
            cond = trainer.model(**run.collate(examples)).example_losses.mean()
            uncond = trainer.model(**run.collate(examples, conditional=False)).example_losses.mean()
        assert metrics[f"eval/{g}"] == pytest.approx(float(cond), abs=1e-4)
        assert metrics[f"cond_gain/{g}"] == pytest.approx(float(uncond - cond), abs=1e-4)
        if g.startswith("speech"):
            turned = [reversed_words(e) for e in examples]
            assert turned[0].meta["text"] != examples[0].meta["text"]
            assert sorted(turned[0].meta["text"]) == sorted(examples[0].meta["text"])  # the same symbols
            with torch.no_grad():
                wrong = trainer.model(**run.collate(turned)).example_losses.mean()
            assert metrics[f"read_gain/{g}"] == pytest.approx(float(wrong - cond), abs=1e-4)
        else:
            assert f"read_gain/{g}" not in metrics


def test_killed_and_resumed_run_reproduces_the_uninterrupted_losses(corpus, tmp_path):
    run = prepare(recipe_from_dict(recipe_dict(corpus, tmp_path / "run")), DistInfo(), progress=False)
    _trainer(run, tmp_path / "a").fit()
    with pytest.raises(KeyboardInterrupt):  # killed after the step-2 checkpoint, mid-way through step 3
        killed_at(_trainer(run, tmp_path / "b"), 3).fit()
    with pytest.raises(UniMoEError, match="--resume"):
        _trainer(run, tmp_path / "b").fit(resume=False)
    _trainer(run, tmp_path / "b").fit(resume=True)
    a, b = read_metrics(tmp_path / "a" / "metrics.jsonl"), read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [r["step"] for r in b] == [r["step"] for r in a]
    for ra, rb in zip(a, b):
        assert ra["loss"] == rb["loss"] and ra.get("eval/loss") == rb.get("eval/loss")


def test_two_gloo_processes_match_one_process(corpus, tmp_path):
    stage = {**STAGE, "steps": 2, "mix": "natural", "log_every": 1}
    for name, accum in (("one", 2), ("two", 1)):
        recipe = recipe_dict(corpus, tmp_path / name, baselines={"naive-joint": {**stage, "grad_accum": accum}})
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "unimoe_audio.cli.main", "train", "--stage", "naive-joint", "--device", "cpu"]
    subprocess.run([*base, "--config", str(tmp_path / "one.yaml")], check=True, env=env, capture_output=True)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
                          "-m", "unimoe_audio.cli.main", "train", "--stage", "naive-joint", "--device", "cpu",
                          "--config", str(tmp_path / "two.yaml")], env=env, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    one_rows = read_metrics(tmp_path / "one" / "baselines" / "naive-joint" / "metrics.jsonl")
    two_rows = read_metrics(tmp_path / "two" / "baselines" / "naive-joint" / "metrics.jsonl")
    assert len(one_rows) == len(two_rows) == 2
    for r1, r2 in zip(one_rows, two_rows):
        assert r1["loss"] == pytest.approx(r2["loss"], rel=1e-4)
    w1 = UniMoEAudio.from_pretrained(tmp_path / "one" / "baselines" / "naive-joint" / "model").model.state_dict()
    w2 = UniMoEAudio.from_pretrained(tmp_path / "two" / "baselines" / "naive-joint" / "model").model.state_dict()
    for key in w1:
        torch.testing.assert_close(w1[key], w2[key], rtol=1e-4, atol=1e-5)


def test_backbone_starts_every_specialist_then_checkpoints_are_judged(corpus, tmp_path):
    """With a backbone stage every specialist starts from the backbone's weights (not from scratch),
    the guided alignment is logged, and eval-checkpoints scores each kept checkpoint with the judges,
    free-running and teacher-forced."""
    from unimoe_audio.workflows.checkpoints import judge_checkpoints
    from unimoe_audio.model import load_model

    guided = {**STAGE, "align_weight": 1.0, "align_layer": 1}
    recipe = recipe_from_dict(recipe_dict(corpus, tmp_path / "run", backbone_groups=["speech-en"],
                                          stages={"backbone": {**guided, "checkpoint_every": 1, "keep_checkpoints": 3},
                                                  "specialists": {**STAGE, "steps": 1, "lr": 1e-9}},
                                          generation={"tts": {"temperature": 0, "top_k": 5}}))
    run_recipe(recipe, "specialists", progress=False)
    out = tmp_path / "run"
    backbone, _ = load_model(out / "backbone" / "model")
    for group in ("speech-en", "speech-zh", "music"):
        specialist, _ = load_model(out / "specialists" / group / "model")
        # One step at LR 1e-9 leaves the backbone's weights (fresh weights would differ everywhere).
        assert torch.allclose(specialist.embed_text.weight, backbone.embed_text.weight, atol=1e-6)
    rows = read_metrics(out / "backbone" / "metrics.jsonl")
    assert any("align_loss" in r for r in rows) and any("align/speech-en" in r for r in rows)
    assert any("val_codebook/1" in r for r in rows)  # validation loss per codebook
    assert all(r.get("loss/speech-zh") is None for r in rows)  # the backbone saw English only
    assert (out / "backbone" / "attention.png").stat().st_size > 0
    judged = judge_checkpoints(out / "backbone", per_task=1, progress=False)
    assert [r["step"] for r in judged] == [1, 2, 3]
    assert all(r["English WER"] is not None and r["Mandarin CER"] is None for r in judged)
    assert all(r["English WER (teacher-forced)"] is not None and r["Mandarin CER (teacher-forced)"] is None for r in judged)
    assert (out / "backbone" / "judged.png").stat().st_size > 0
    # Every model the run saves, the checkpoints' exports too, decodes with the recipe's settings.
    for model_dir in (out / "specialists" / "music" / "model", out / "backbone" / "exports" / "step-0000002"):
        assert UniMoEAudio.from_pretrained(model_dir).generation == {"tts": {"temperature": 0, "top_k": 5}}
    assert judge_checkpoints(out / "backbone", per_task=1, progress=False) == judged  # nothing judged twice
    on_train = judge_checkpoints(out / "backbone", "train", per_task=1, every=3, progress=False)  # a split of its own
    assert [r["step"] for r in on_train] == [3] and on_train[0]["English WER (teacher-forced)"] is not None
    assert (out / "backbone" / "judged-train.png").stat().st_size > 0
    with pytest.raises(UniMoEError, match="no backbone stage"):
        run_recipe(recipe_from_dict(recipe_dict(corpus, tmp_path / "other")), "backbone", progress=False)


def test_a_run_saved_before_a_setting_existed_still_resumes(corpus, tmp_path):
    """A recipe.json without a setting added to the schema later matches the same recipe (the
    setting takes its default), while a changed value is still a different recipe."""
    from unimoe_audio.train.curriculum import same_recipe

    recipe = recipe_from_dict(recipe_dict(corpus, tmp_path / "run"))
    saved = json.loads(json.dumps(recipe.to_dict()))
    for stage in saved["stages"].values():
        del stage["align_sigma"]  # as written by a version that did not have it
    del saved["backbone_groups"]
    assert same_recipe(saved, recipe)
    saved["stages"]["joint"]["steps"] += 1
    assert not same_recipe(saved, recipe)
    assert not same_recipe({**saved, "retired_setting": 1}, recipe)


def test_only_stages_that_have_not_started_may_change(corpus, tmp_path):
    """A run whose specialists hold a checkpoint refuses new specialist settings but accepts new
    settings for the joint stage, which has not started, and new generation defaults."""
    from unimoe_audio.train.curriculum import same_recipe, started_stages

    out = tmp_path / "run"
    recipe = recipe_from_dict(recipe_dict(corpus, out))
    (out / "specialists" / "speech-en" / "checkpoints").mkdir(parents=True)
    (out / "specialists" / "speech-en" / "checkpoints" / "step-0000050.pt").write_bytes(b"")
    assert started_stages(out) == {"specialists"}
    saved = json.loads(json.dumps(recipe.to_dict()))
    later = json.loads(json.dumps(saved))
    later["stages"]["joint"]["steps"] += 5
    later["generation"] = {"tts": {"temperature": 0}}  # how the models decode, not what they learn
    assert same_recipe(saved, recipe_from_dict(later), started_stages(out))
    sooner = json.loads(json.dumps(saved))
    sooner["stages"]["specialists"]["steps"] += 5
    assert not same_recipe(saved, recipe_from_dict(sooner), started_stages(out))


def test_group_steps_set_one_specialists_length(corpus, tmp_path):
    """`group_steps` gives one group's specialist its own length; it is refused outside the
    specialists stage and for unknown groups."""
    data = recipe_dict(corpus, tmp_path / "run")
    data["stages"]["specialists"] = {**STAGE, "group_steps": {"music": 2}}
    run_recipe(recipe_from_dict(data), "specialists", progress=False)
    steps = {g: [json.loads(line) for line in (tmp_path / "run" / "specialists" / g / "metrics.jsonl").open()][-1]["step"]
             for g in ("speech-en", "music")}
    assert steps["music"] == 2 and steps["speech-en"] == data["stages"]["specialists"]["steps"]
    data["stages"]["joint"] = {**data["stages"]["joint"], "group_steps": {"music": 3}}
    with pytest.raises(UniMoEError, match="specialists stage only"):
        recipe_from_dict(data)
    data["stages"]["joint"] = {**data["stages"]["joint"], "group_steps": {}}
    data["stages"]["specialists"] = {**STAGE, "group_steps": {"video": 3}}
    with pytest.raises(UniMoEError, match="group_steps"):
        recipe_from_dict(data)


def test_a_metrics_line_cut_short_by_a_kill_is_dropped_with_a_warning(tmp_path, capsys):
    from unimoe_audio.train.trainer import MetricsLog

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    assert read_metrics(path) == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]
    assert "metrics.jsonl:3 was cut short" in capsys.readouterr().err
    MetricsLog(path, tmp_path / "tb", resume_step=1).close()  # resuming from step 1 keeps what came before it
    assert read_metrics(path) == [{"step": 1, "loss": 2.0}]
    path.write_text('{"step": 1, "lo\n{"step": 2, "loss": 1.5}\n')
    with pytest.raises(UniMoEError, match="metrics.jsonl:1 is not valid JSON"):
        read_metrics(path)


def test_resume_across_and_within_stages_reproduces_the_uninterrupted_losses(corpus, tmp_path, monkeypatch):
    """Killed between warm-up and joint, or during joint, then run again (with whatever random state the
    new process has): warm-up and joint losses are bit-identical to one uninterrupted run."""
    import random
    import shutil

    import numpy as np

    def recipe(name):
        data = recipe_dict(corpus, tmp_path / name)
        data["stages"]["specialists"] = {**STAGE, "steps": 1}
        data["stages"]["joint"] = {**data["stages"]["joint"], "checkpoint_every": 1, "log_every": 1}
        return recipe_from_dict(data)

    def fresh_process():  # what differs in a new process: the global random state
        torch.manual_seed(12345), np.random.seed(6789), random.seed(1011)

    run_recipe(recipe("whole"), "joint", progress=False)
    for name in ("between", "during"):  # both start from the same specialists and warm-up
        for stage in ("specialists", "warmup"):
            shutil.copytree(tmp_path / "whole" / stage, tmp_path / name / stage)
        shutil.copy(tmp_path / "whole" / "frontend.json", tmp_path / name / "frontend.json")
    fresh_process()
    run_recipe(recipe("between"), "joint", progress=False)

    original = Trainer.train_step

    def dying_step(self):
        if self.name == "joint" and self.step == 2:
            raise KeyboardInterrupt  # killed after the step-2 checkpoint, mid-way through step 3
        return original(self)

    monkeypatch.setattr(Trainer, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe("during"), "joint", progress=False)
    monkeypatch.setattr(Trainer, "train_step", original)
    fresh_process()
    run_recipe(recipe("during"), "joint", progress=False)

    def losses(name):
        return [(r["step"], r["loss"], r.get("eval/loss")) for r in read_metrics(tmp_path / name / "joint" / "metrics.jsonl")]

    assert len(losses("whole")) == 3
    assert losses("between") == losses("whole")
    assert losses("during") == losses("whole")


def test_a_bad_manifest_line_is_refused_before_the_codec_is_trained(corpus, tmp_path):
    (tmp_path / "c").mkdir()
    for split in ("train", "validation", "test"):
        text = (corpus / f"{split}.jsonl").read_text()
        (tmp_path / "c" / f"{split}.jsonl").write_text(text.replace('"group": "music"', '"group": "songs"', 1)
                                                       if split == "test" else text)
    recipe = recipe_from_dict(recipe_dict(tmp_path / "c", tmp_path / "run"))
    with pytest.raises(UniMoEError, match=r"test.jsonl:\d+: unknown group 'songs'"):
        run_recipe(recipe, progress=False)
    assert not (tmp_path / "c" / "codec").exists() and not (tmp_path / "c" / "tokens").exists()


def test_a_paper_preset_that_cannot_be_built_is_refused_before_the_corpus_is_built(tmp_path, monkeypatch):
    import unimoe_audio.train.curriculum as curriculum

    def no_build(*args, **kwargs):
        raise AssertionError("the corpus build started")

    monkeypatch.setattr(curriculum, "build", no_build)
    recipe = recipe_from_dict({"out": str(tmp_path / "run"), "corpus": {"path": str(tmp_path / "corpus")},
                               "model": {"preset": "paper"}})
    with pytest.raises(UniMoEError, match="promises the paper's DCMoE"):
        run_recipe(recipe, progress=False)


def test_a_recipe_whose_codec_settings_differ_from_the_corpus_codec_says_which_it_uses(corpus, tmp_path, capsys):
    shutil.copytree(corpus, tmp_path / "c", ignore=shutil.ignore_patterns("tokens"))
    bands = recipe_dict(tmp_path / "c", tmp_path / "run")
    bands["corpus"]["quantizer"] = "bands"
    run = prepare(recipe_from_dict(bands), DistInfo(0, 1, 0, torch.device("cpu")), progress=False)
    assert run.codec.config.quantizer == "residual"  # the corpus's own codec is kept
    assert "using the codec at" in capsys.readouterr().err
    with pytest.raises(UniMoEError, match="corpus.quantizer must be one of"):
        recipe_from_dict({**bands, "corpus": {"path": str(tmp_path / "c"), "quantizer": "vq"}})


def test_a_run_keeps_the_delay_pattern_its_stages_were_trained_with(corpus, tmp_path):
    """A new run takes the codec's pattern; once a stage has started, its recorded pattern holds,
    so a run begun before band codecs moved to delay 0 is not resumed in another layout."""
    codec = load_codec(corpus / "codec")
    assert run_delays(tmp_path / "run", codec) == codec.delays
    (tmp_path / "run" / "backbone").mkdir(parents=True)
    (tmp_path / "run" / "backbone" / "stage.json").write_text(json.dumps({"model": {"delays": [3, 2, 1, 0]}}))
    assert codec.delays != (3, 2, 1, 0) and run_delays(tmp_path / "run", codec) == (3, 2, 1, 0)


def test_a_codec_with_two_frames_per_step_trains_and_speaks_at_25_steps_per_second(corpus, tmp_path):
    shutil.copytree(corpus, tmp_path / "c", ignore=shutil.ignore_patterns("tokens", "codec"))
    stacked = recipe_dict(tmp_path / "c", tmp_path / "run")
    stacked["corpus"].update(codebooks=4, codebook_size=32, frames_per_step=2)
    recipe = recipe_from_dict(stacked)
    run = prepare(recipe, DistInfo(), progress=False)
    assert (run.base.num_codebooks, run.base.delays, run.codec.frame_rate) == (8, (0, 0, 1, 1, 2, 2, 3, 3), 25.0)
    run_recipe(recipe, "specialists", progress=False)
    api = UniMoEAudio.from_pretrained(tmp_path / "run" / "specialists" / "speech-en" / "model")
    request = api.request("tts", "the cat sat", "en", api.speakers[0])
    [wave] = api.generate([request], GenerationConfig(max_frames=10, min_frames=10, seed=0))
    assert len(wave) == (2 * 10 - 1) * 320  # ten steps of two 20 ms frames
    with pytest.raises(UniMoEError, match="corpus.frames_per_step must be at least 1"):
        recipe_from_dict({**stacked, "corpus": {"path": str(tmp_path / "c"), "frames_per_step": 0}})


def test_a_grown_codec_keeps_the_first_groups_codes_and_adds_the_grow_groups(corpus, tmp_path):
    shutil.copytree(corpus, tmp_path / "c", ignore=shutil.ignore_patterns("tokens", "codec"))
    grown = recipe_dict(tmp_path / "c", tmp_path / "run")
    grown["corpus"].update(codebooks=4, codebook_size=16, quantizer="bands", grow_codes=8,
                           grow_groups=["speech-zh", "music"])
    run = prepare(recipe_from_dict(grown), DistInfo(), progress=False)
    assert run.codec.codebook_size == run.base.codebook_size == 24
    entries = [json.loads(line) for line in (tmp_path / "c" / "train.jsonl").read_text().splitlines()]
    english = [tmp_path / "c" / e["audio"] for e in entries if e["group"] not in ("speech-zh", "music")]
    alone = SpectralCodec.train_on_files(english, replace(run.codec.config, codebook_size=16), 10.0, progress=False)
    assert run.codec.extends(alone)  # the first 16 codes are those the other groups teach, kept as they were
    tokens = TokenDataset(tmp_path / "c" / "tokens", "train")
    zh = [tokens[i].codes for i in range(len(tokens)) if tokens[i].meta["group"] == "speech-zh"]
    assert any((codes >= 16).any() for codes in zh)  # Mandarin is coded with the new codes too
    for bad, match in (({"grow_codes": 8}, "go together"), ({"grow_groups": ["music"]}, "go together"),
                       ({"grow_codes": 8, "grow_groups": ["klingon"]}, "unknown task group")):
        with pytest.raises(UniMoEError, match=match):
            recipe_from_dict({**grown, "corpus": {"path": str(tmp_path / "c"), **bad}})
