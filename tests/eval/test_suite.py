"""`eval` and `analyze-routing` on a model trained by the tiny test recipe."""

import json

import pytest
import yaml

from unimoe_audio.cli.main import main
from unimoe_audio.train.config import recipe_from_dict
from unimoe_audio.train.curriculum import run_recipe

STAGE = {"steps": 2, "lr": 1e-3, "batch_size": 4, "eval_every": 2, "eval_batches": 1, "checkpoint_every": 2}


@pytest.fixture(scope="module")
def models(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    recipe = {"name": "eval-test", "out": str(out), "corpus": {"path": str(corpus)},
              "model": {"preset": "tiny", "hidden_size": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2,
                        "intermediate_size": 32, "max_positions": 512},
              "moe": {"slices_per_specialist": 2, "num_shared": 1}, "max_music_frames": 20,
              "stages": {"specialists": STAGE, "warmup": {**STAGE, "mix": "balanced"}, "joint": {**STAGE, "mix": "balanced"}},
              "baselines": {name: STAGE for name in ("naive-joint", "dense-balanced", "top-k", "scratch")}}
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
