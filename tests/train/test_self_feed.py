"""Scheduled sampling (a stage's `self_feed`): the fed-back frames it replaces, and only those."""

from dataclasses import replace

import pytest
import torch

from unimoe_audio.errors import UniMoEError
from unimoe_audio.model.transformer import IGNORE
from unimoe_audio.train.config import StageConfig, recipe_from_dict
from unimoe_audio.train.curriculum import fresh, prepare
from unimoe_audio.train.distributed import DistInfo
from unimoe_audio.train.self_feed import fed_own_predictions
from unimoe_audio.train.trainer import Trainer

from .test_curriculum import recipe_dict


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    return prepare(recipe_from_dict(recipe_dict(corpus, tmp_path_factory.mktemp("self-feed"))), DistInfo(), progress=False)


def _batch(run):
    """Speech, a cloned voice (its voice prompt is audio that must stay) and music."""
    tasks = [run.train_set[i].meta["task"] for i in range(len(run.train_set))]
    first = tasks.index("tts")
    speech, other, music = run.train_set[first], run.train_set[first + 1], run.train_set[tasks.index("t2m")]
    clone = replace(speech, prompt_codes=other.codes,
                    meta={**speech.meta, "task": "clone", "prompt_text": other.meta["text"]})
    return run.collate([speech, clone, music])


def _greedy(model, batch, size):
    """Each position's arg-max code, from the model's hidden states at every position."""
    with torch.no_grad():
        hidden, _, _ = model.hidden(batch["tokens"], batch["audio"], batch["is_audio"], pad_mask=batch["pad_mask"])
        return model.logits(hidden)[..., :size].argmax(-1).permute(0, 2, 1)  # [B, K, L]


def test_every_fed_back_frame_becomes_the_greedy_prediction_and_nothing_else_changes(run):
    model, batch = fresh(run, run.base).eval(), _batch(run)
    size = model.config.codebook_size
    out = fed_own_predictions(model, batch, size, 1.0, torch.Generator().manual_seed(0))
    targets = batch["targets"]
    fed = torch.zeros_like(targets, dtype=torch.bool)
    fed[:, :, 1:] = (targets[:, :, :-1] != IGNORE) & (targets[:, :, :-1] < size)  # inputs that are recorded codes
    assert fed.any(-1).all()  # every example has generated audio fed back
    greedy = torch.zeros_like(targets)
    greedy[:, :, 1:] = _greedy(model, batch, size)[:, :, :-1]
    assert torch.equal(out["audio"][fed], greedy[fed])
    assert torch.equal(out["audio"][~fed], batch["audio"][~fed])  # text, voice prompt, BOS/EOS/PAD
    assert (out["audio"][fed] != batch["audio"][fed]).float().mean() > 0.5  # an untrained model guesses wrong
    for key in ("tokens", "targets", "is_audio", "pad_mask"):
        assert out[key] is batch[key]


def test_a_share_replaces_whole_frames_drawn_by_the_generator(run):
    model, batch = fresh(run, run.base).eval(), _batch(run)
    size = model.config.codebook_size
    assert fed_own_predictions(model, batch, size, 0.0, torch.Generator()) is batch
    half = fed_own_predictions(model, batch, size, 0.5, torch.Generator().manual_seed(1))
    again = fed_own_predictions(model, batch, size, 0.5, torch.Generator().manual_seed(1))
    other = fed_own_predictions(model, batch, size, 0.5, torch.Generator().manual_seed(2))
    assert torch.equal(half["audio"], again["audio"]) and not torch.equal(half["audio"], other["audio"])
    targets = batch["targets"][:, :, :-1]
    codes = (targets != IGNORE) & (targets < size)
    full = fed_own_predictions(model, batch, size, 1.0, torch.Generator())["audio"][:, :, 1:]
    changed = (half["audio"][:, :, 1:] != batch["audio"][:, :, 1:]) & codes
    took = (half["audio"][:, :, 1:] == full) & codes  # the prediction was fed (or equals the recording)
    frames = codes.all(1)  # positions whose every codebook is a recorded code
    whole = took.all(1) | (~changed).all(1)  # a frame is the prediction throughout, or untouched
    assert whole[frames].all()
    share = (changed.any(1) & frames).sum() / ((full != batch["audio"][:, :, 1:]) & codes).any(1)[frames].sum()
    assert 0.3 < float(share) < 0.7


def test_a_stage_with_self_feed_trains_on_other_inputs_and_is_checked(run, tmp_path):
    losses = {}
    for share, start in ((0.0, 0.0), (1.0, 0.0), (1.0, 0.5)):
        config = StageConfig(steps=2, lr=1e-3, batch_size=4, self_feed=share, self_feed_start=start, eval_every=5,
                             checkpoint_every=5)
        trainer = Trainer(fresh(run, run.base), config, run.train_set, run.collate, tmp_path / f"{share}-{start}",
                          seed=0, progress=False)
        losses[share, start] = [trainer.train_step()["loss"] for _ in range(2)]
    assert losses[0.0, 0.0][0] != losses[1.0, 0.0][0]  # same weights and batch: only the fed-back frames differ
    assert losses[1.0, 0.5][0] == losses[0.0, 0.0][0]  # teacher-forced for the first half of the steps,
    assert losses[1.0, 0.5][1] != losses[0.0, 0.0][1]  # self-fed from it on
    with pytest.raises(UniMoEError, match="self_feed"):
        StageConfig(self_feed=1.5)
    with pytest.raises(UniMoEError, match="self_feed_start"):
        StageConfig(self_feed=0.5, self_feed_start=1.0)
