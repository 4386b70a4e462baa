"""Recipe YAML loading: defaults, overrides, unknown keys and impossible values."""

import pytest

from unimoe_audio.errors import UniMoEError
from unimoe_audio.train.config import StageConfig, load_recipe, recipe_from_dict


def test_stage_overrides_keep_paper_defaults_for_unset_fields():
    recipe = recipe_from_dict({"stages": {"warmup": {"steps": 7}}})
    assert recipe.stages["warmup"].steps == 7
    assert recipe.stages["warmup"].lr == 3e-5  # REFERENCE §7, untouched by the override
    assert recipe.stages["joint"].lr == 1e-5
    assert recipe.stages["specialists"].mix == "natural"


@pytest.mark.parametrize("data, words", [
    ({"stages": {"joint": {"stepz": 3}}}, ["stepz", "stages.joint"]),
    ({"corpus": {"pth": "x"}}, ["pth", "corpus"]),
    ({"learning_rate": 1}, ["learning_rate"]),
    ({"stages": {"stage4": {}}}, ["stage4"]),
    ({"baselines": {"gpt": {}}}, ["gpt"]),
])
def test_unknown_keys_are_named_in_the_error(data, words):
    with pytest.raises(UniMoEError) as err:
        recipe_from_dict(data)
    for w in words:
        assert w in str(err.value)


@pytest.mark.parametrize("fields, word", [
    ({"steps": 0}, "steps"), ({"lr": -1.0}, "lr"), ({"warmup_ratio": 1.5}, "warmup_ratio"),
    ({"batch_size": 6, "grad_accum": 4}, "grad_accum"), ({"mix": "weird"}, "mix"), ({"subset": 0.0}, "subset"),
    ({"parallel": "zero3"}, "parallel must be one of"),
    ({"expert_parallel": 2}, "group size of parallel: ep"), ({"parallel": "ep", "expert_parallel": -1}, "expert_parallel"),
    ({"parallel": "ep", "activation_checkpointing": True}, "fsdp only"),
])
def test_impossible_values_are_rejected(fields, word):
    with pytest.raises(UniMoEError, match=word):
        StageConfig(**fields)


def test_expert_parallelism_is_refused_for_dense_stages_when_the_recipe_is_read():
    assert recipe_from_dict({"stages": {"joint": {"parallel": "ep", "expert_parallel": 4}}}).stages["joint"].expert_parallel == 4
    for data in ({"stages": {"specialists": {"parallel": "ep"}}}, {"baselines": {"naive-joint": {"parallel": "ep"}}}):
        with pytest.raises(UniMoEError, match="train dense models"):
            recipe_from_dict(data)


def test_wrong_types_are_rejected_with_the_key():
    with pytest.raises(UniMoEError, match="stages.joint.lr"):
        recipe_from_dict({"stages": {"joint": {"lr": "fast"}}})


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(UniMoEError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: [unclosed\n")
    with pytest.raises(UniMoEError, match="YAML"):
        load_recipe(bad)


@pytest.mark.parametrize("model, words", [
    ({"num_codebooks": 8}, ["model.num_codebooks cannot be set", "the codec"]),
    ({"codebook_size": 512, "text_vocab_size": 99}, ["model.codebook_size", "model.text_vocab_size", "front-end"]),
    ({"delays": [0, 1]}, ["model.delays"]),
    ({"ffn": "moe"}, ["model.ffn", "each stage"]),
    ({"moe": {"num_routed": 4}}, ["model.moe", "top-level `moe:`"]),
    ({"preset": "huge"}, ["unknown model.preset 'huge'"]),
    ({"hidden_sise": 64}, ["hidden_sise", "'model'"]),
    ({"hidden_size": "big"}, ["'model.hidden_size' must be int"]),
    ({"hidden_size": 100, "num_heads": 3}, ["model: invalid UniMoEAudioConfig", "not divisible"]),
])
def test_the_model_section_is_typed_and_checked_when_the_recipe_is_read(model, words):
    with pytest.raises(UniMoEError) as err:
        recipe_from_dict({"model": {"preset": "tiny", **model}})
    for w in words:
        assert w in str(err.value)


def test_the_paper_preset_builds_the_papers_dcmoe_or_says_why_not():
    paper = recipe_from_dict({"model": {"preset": "paper"}, "moe": {"slices_per_specialist": 4, "num_null": 1, "num_shared": 2}})
    moe = paper.moe_config(2)  # speech and music specialists, 11008-wide FFNs, 4 slices each
    assert (moe.num_routed, moe.routed_size, moe.num_null, moe.num_shared, moe.shared_size) == (8, 2752, 1, 2, 1376)
    with pytest.raises(UniMoEError, match="promises the paper's DCMoE .* 3 specialists' 11008-wide FFNs .* 12 × 2752"):
        paper.moe_config(3)  # the built corpus's three task groups
    with pytest.raises(UniMoEError, match="6 × 5504"):
        recipe_from_dict({"model": {"preset": "paper"}}).moe_config(3)  # the default 2 slices
    assert recipe_from_dict({"model": {"preset": "small"}}).moe_config(3).num_routed == 6  # other presets: as configured
