"""`eval` and `analyze-routing` on a model trained by the tiny test recipe."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from unimoe_audio.cli.main import main
from unimoe_audio.eval.routing import analyze_routing
from unimoe_audio.eval.suite import evaluate
from unimoe_audio.train.config import recipe_from_dict
from unimoe_audio.train.curriculum import run_recipe

STAGE = {"steps": 2, "lr": 1e-3, "batch_size": 4, "eval_every": 2, "eval_batches": 1, "checkpoint_every": 2}


def tiny_recipe(name, out, corpus, **fields) -> dict:
    """The curriculum of a 2-layer, 32-wide model, 2 steps a stage."""
    return {"name": name, "out": str(out), "corpus": {"path": str(corpus)},
            "model": {"preset": "tiny", "hidden_size": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2,
                      "intermediate_size": 32, "max_positions": 512},
            "moe": {"slices_per_specialist": 2, "num_shared": 1},
            "stages": {"specialists": STAGE, "warmup": {**STAGE, "mix": "balanced"}, "joint": {**STAGE, "mix": "balanced"}},
            **fields}


@pytest.fixture(scope="module")
def models(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    recipe = tiny_recipe("eval-test", out, corpus, max_music_frames=20,
                         baselines={name: STAGE for name in ("naive-joint", "dense-balanced", "top-k", "scratch")})
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    run_recipe(recipe_from_dict(recipe), progress=False)
    return out


def test_eval_scores_generated_and_ground_truth(models, capsys):
    assert main(["eval", "--model", str(models / "joint" / "model"), "--max-music-seconds", "2.5"]) == 0
    results = json.loads((models / "joint" / "eval-test" / "results.json").read_text())
    en = results["speech-en"]
    assert en["items"] == 2  # one tts, one clone
    assert en["wer_whisper_ground_truth"] < 0.5  # flite's "the cat sat on the mat" is understood
    assert en["wer_whisper"] >= en["wer_whisper_ground_truth"]  # two training steps cannot speak
    assert results["speech-zh"]["items"] == 1 and "cer_whisper" in results["speech-zh"]
    assert results["clone"]["similarity_ceiling"] > 0.5
    assert results["music"]["ground_truth"]["texture_accuracy"] == 1.0
    assert set(results["real_time_factor"]) == {"tts", "clone", "t2m"}
    assert "| en WER (Whisper-base" in capsys.readouterr().out


def test_analyze_routing_writes_plot_and_numbers(models, capsys):
    assert main(["analyze-routing", "--model", str(models / "joint" / "model")]) == 0
    data = json.loads((models / "joint" / "routing" / "routing.json").read_text())
    layer = data["layers"]["0"]
    assert {"all", "speech-en", "speech-zh", "music"} <= set(layer)
    assert sum(layer["all"]["experts_per_token_hist"]) == pytest.approx(1, abs=1e-3)
    assert (models / "joint" / "routing" / "routing.png").stat().st_size > 0
    assert main(["analyze-routing", "--model", str(models / "specialists" / "music" / "model")]) == 2
    assert "dense model" in capsys.readouterr().err


def test_reproduce_writes_the_comparison_report(models, tmp_path):
    report = tmp_path / "docs" / "results.md"
    assert main(["reproduce", "--config", str(models / "recipe.yaml"), "--report", str(report), "--per-task", "1"]) == 0
    text = report.read_text()
    for label in ("specialists", "naive joint", "MoE-sized", "Top-K", "from scratch", "curriculum DCMoE", "ground truth"):
        assert label in text
    assert "Against naive joint training: the claim **" in text
    assert (tmp_path / "docs" / "img" / "results-routing.png").is_file()
    assert (tmp_path / "docs" / "img" / "results-curriculum-loss.png").is_file()

    # a second run (e.g. after an interruption) reuses every evaluation with the same settings
    stamps = {p: p.stat().st_mtime_ns for p in models.glob("eval/*/results.json")}
    assert len(stamps) == 8
    assert main(["reproduce", "--config", str(models / "recipe.yaml"), "--report", str(report), "--per-task", "1"]) == 0
    assert {p: p.stat().st_mtime_ns for p in models.glob("eval/*/results.json")} == stamps


def test_music_without_tempo_or_key_is_scored_for_what_it_states(corpus):
    """An imported music corpus has captions but no bpm/key/parts fields: the other scores still come."""
    from unimoe_audio.data import read_manifest
    from unimoe_audio.eval.suite import markdown, score_music

    music = [e for e in read_manifest(corpus / "validation.jsonl") if e["task"] == "t2m"]
    items = [{k: v for k, v in e.items() if k not in ("bpm", "key", "parts")} for e in music[:1]] + music[1:]
    generated = {e["id"]: {"path": corpus / e["audio"]} for e in items}
    result = score_music(items, generated, corpus)
    assert result["unscored"] == {"bpm": 1, "key": 1, "parts": 1}
    assert result["ground_truth"]["tempo_accuracy"] is not None and result["frechet"] is not None
    none = score_music(items[:1], generated, corpus)["generated"]
    assert set(none.values()) == {None}
    report = {"model": "m", "split": "validation", "music": result, "empty_outputs": 0, "real_time_factor": {}}
    assert "1 without bpm, 1 without key, 1 without parts" in markdown(report)


def test_a_corrupt_judge_cache_is_rebuilt_with_a_warning(tmp_path, capsys):
    from unimoe_audio.eval.ceiling import GroundTruthCache

    (tmp_path / "judge-cache.json").write_text('{"whisper:en:a.wav": "the ca')
    cache = GroundTruthCache(tmp_path)
    assert cache.get("whisper:en:a.wav", lambda: "the cat") == "the cat"
    cache.save()
    assert GroundTruthCache(tmp_path).values == {"whisper:en:a.wav": "the cat"}
    assert "judge-cache.json is corrupt" in capsys.readouterr().err


@pytest.fixture(scope="module")
def video_models(video_corpus, tmp_path_factory):
    """The tiny test curriculum on the corpus with v2m items (no baselines)."""
    out = tmp_path_factory.mktemp("video-run")
    recipe = tiny_recipe("video-test", out, video_corpus, max_music_frames=40)
    run_recipe(recipe_from_dict(recipe), "joint", progress=False)
    return out


def test_a_corpus_with_videos_trains_four_specialists_and_routes_four_tasks(video_models, video_corpus):
    from unimoe_audio.model import load_model

    assert sorted(p.name for p in (video_models / "specialists").iterdir()) == ["music", "speech-en", "speech-zh", "v2m"]
    speech = load_model(video_models / "specialists" / "speech-en" / "model")[0]
    v2m = load_model(video_models / "specialists" / "v2m" / "model")[0]
    warmup = load_model(video_models / "warmup" / "model")[0]
    assert warmup.moe_layers()[0].config.num_routed == 8  # 4 specialists × 2 slices
    for name, p in warmup.vision.state_dict().items():  # the encoder only the v2m specialist trained (frozen in warm-up)
        assert torch.equal(p, v2m.vision.state_dict()[name]) and not torch.equal(p, speech.vision.state_dict()[name]), name
    layer = analyze_routing(video_models / "joint" / "model", progress=False)["layers"]["0"]
    assert {"speech-en", "speech-zh", "music", "v2m"} <= set(layer) and len(layer["v2m"]["expert_load"]) == 8


def test_v2m_is_scored_on_what_the_video_determines_beside_a_mismatched_video(video_models, capsys):
    report = evaluate(video_models / "joint" / "model", per_task=2, groups=("v2m",), max_music_seconds=2.5, progress=False)
    v2m = report["music"]["v2m"]
    assert v2m["items"] == 2 and set(v2m) == {"items", "matched", "mismatched", "ground_truth"}
    truth = v2m["ground_truth"]  # click tracks on the videos' beats, in the stated keys
    assert truth["beat_alignment"] > 0.6 and truth["tempo_accuracy"] == 1.0 and truth["key_accuracy"] is not None
    for scores in (v2m["matched"], v2m["mismatched"]):
        assert 0 <= scores["beat_alignment"] <= 1 and scores["tempo_accuracy"] is not None
    assert (Path(report["output"]) / "audio" / "v2m-test-0#mismatched.wav").is_file()
    assert "| beat alignment |" in (Path(report["output"]) / "results.md").read_text()


def test_generate_cli_makes_music_for_a_video_the_user_brings(video_models, video_corpus, tmp_path, capsys):
    model, out = str(video_models / "joint" / "model"), tmp_path / "music.wav"
    video = str(video_corpus / "videos" / "v2m-test-0.mp4")
    assert main(["generate", "--model", model, "--task", "v2m", "--video", video, "--seed", "0", "-o", str(out)]) == 0
    seconds = float(capsys.readouterr().out.split(" s of audio")[0].rsplit("(", 1)[1])
    assert abs(seconds - 2.5) < 0.03  # as long as the video (to a frame, 0.02 s)
    assert main(["generate", "--model", model, "--task", "v2m", "-o", str(out)]) == 2
    assert "--task v2m needs --video" in capsys.readouterr().err
    (tmp_path / "bad.mp4").write_text("not a video")
    assert main(["generate", "--model", model, "--task", "v2m", "--video", str(tmp_path / "bad.mp4"), "-o", str(out)]) == 2
    assert "cannot read the video" in capsys.readouterr().err
