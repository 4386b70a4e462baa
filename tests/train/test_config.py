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
])
def test_impossible_values_are_rejected(fields, word):
    with pytest.raises(UniMoEError, match=word):
        StageConfig(**fields)


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
