"""A recipe's `init:`: the first stage starts from a trained model whose vocabulary the run grows."""

from dataclasses import replace

import pytest
import torch

from unimoe_audio.codec import SpectralCodec, SpectralCodecConfig
from unimoe_audio.data import SPLITS, read_manifest
from unimoe_audio.errors import UniMoEError
from unimoe_audio.model import TextFrontend, UniMoEAudioModel, load_model
from unimoe_audio.model.pipeline import save_model
from unimoe_audio.train.config import recipe_from_dict
from unimoe_audio.train.curriculum import first, fresh, prepare, run_recipe
from unimoe_audio.train.distributed import DistInfo

from .test_curriculum import STAGE, recipe_dict


def _trained(corpus, run, directory, codec=None, **shape):
    """A model that knows English only (its front-end fitted on the English items), with weights
    unlike the run's fresh ones, saved with the corpus's codec (or `codec`)."""
    entries = [e for split in SPLITS for e in read_manifest(corpus / f"{split}.jsonl")]
    english = TextFrontend.fit([e for e in entries if e.get("language") == "en"])
    torch.manual_seed(123)
    model = UniMoEAudioModel(replace(run.base, text_vocab_size=len(english), **shape))
    save_model(directory, model, english)
    (codec or run.codec).save_pretrained(directory / "codec")
    return model, english


def _run(corpus, out, init):
    return prepare(recipe_from_dict(recipe_dict(corpus, out, init=str(init), backbone_groups=["speech-en"],
                                                stages={"backbone": {**STAGE, "steps": 1, "lr": 1e-9}})),
                   DistInfo(), progress=False)


def test_the_backbone_starts_from_the_trained_model_and_new_tokens_start_fresh(corpus, tmp_path):
    run = _run(corpus, tmp_path / "run", tmp_path / "trained")
    trained, english = _trained(corpus, run, tmp_path / "trained")
    run_recipe(run.recipe, "backbone", progress=False)
    started, frontend = load_model(tmp_path / "run" / "backbone" / "model")
    new = [t for t in frontend.vocab if t not in english.ids]
    assert {"<spk:zh-spk0>", "<spk:zh-spk1>"} <= set(new)  # the Mandarin speakers
    assert any(frontend.ids[t] != english.ids[t] for t in english.vocab)  # ids moved: rows follow the tokens
    kept = torch.tensor([frontend.ids[t] for t in frontend.vocab if t in english.ids])
    was = torch.tensor([english.ids[t] for t in frontend.vocab if t in english.ids])
    assert torch.allclose(started.embed_text.weight[kept], trained.embed_text.weight[was], atol=1e-6)
    new_ids = torch.tensor([frontend.ids[t] for t in new])
    initial = fresh(run, run.base).embed_text.weight
    assert torch.allclose(started.embed_text.weight[new_ids], initial[new_ids], atol=1e-6)  # (one step at LR 1e-9)
    for name, value in trained.state_dict().items():
        if name != "embed_text.weight":
            assert torch.allclose(started.state_dict()[name], value, atol=1e-6), name


def test_another_codec_or_shape_is_refused_naming_it(corpus, tmp_path):
    run = _run(corpus, tmp_path / "run", tmp_path / "other-codec")
    config = replace(run.codec.config, seed=run.codec.config.seed + 1)
    other = SpectralCodec.train([(torch.randn(8000).numpy(), run.codec.sample_rate)], config, progress=False)
    _trained(corpus, run, tmp_path / "other-codec", codec=other)
    with pytest.raises(UniMoEError, match="codec"):
        first(run)
    run = _run(corpus, tmp_path / "run2", tmp_path / "wider")
    _trained(corpus, run, tmp_path / "wider", intermediate_size=run.base.intermediate_size * 2)
    with pytest.raises(UniMoEError, match="another shape"):
        first(run)


def test_a_grown_codec_keeps_the_old_codes_rows_and_adds_fresh_ones(corpus, tmp_path):
    """The corpus's codec extends the model's (here: the model's codec is the corpus's first 12
    codes of 16): codes keep their embedding and output rows, EOS/PAD/BOS move up with them."""
    run = _run(corpus, tmp_path / "run", tmp_path / "trained")
    c = run.codec
    smaller = SpectralCodec(replace(c.config, codebook_size=12), c.mean, c.std, c.codebooks[:, :12])
    trained, _ = _trained(corpus, run, tmp_path / "trained", codec=smaller, codebook_size=12)
    started, initial = first(run), fresh(run, run.base)
    k, old, new = run.base.num_codebooks, 12 + 3, c.codebook_size + 3
    for name in ("embed_audio.weight", "head.weight"):
        was, now, init = (m.state_dict()[name] for m in (trained, started, initial))
        for book in range(k):
            assert torch.equal(now[book * new: book * new + 12], was[book * old: book * old + 12])  # codes
            assert torch.equal(now[book * new + c.codebook_size: (book + 1) * new], was[book * old + 12: (book + 1) * old])
            assert torch.equal(now[book * new + 12: book * new + c.codebook_size],  # the 4 new codes: fresh
                               init[book * new + 12: book * new + c.codebook_size])
