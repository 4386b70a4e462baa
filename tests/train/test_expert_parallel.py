"""Expert parallelism (`parallel: ep`) with 2 CPU processes (gloo): the losses of one process, a
checkpoint in the single-process format holding the gathered experts, an exact resume, and
layouts that do not divide refused before training."""

import json
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from unimoe_audio.errors import UniMoEError
from unimoe_audio.model import UniMoEAudioConfig, UniMoEAudioModel
from unimoe_audio.train.config import StageConfig, recipe_from_dict
from unimoe_audio.train.curriculum import moe_config, prepare
from unimoe_audio.train.distributed import DistInfo
from unimoe_audio.train.trainer import build_optimizer, list_checkpoints, read_metrics

from .processes import STAGE, fit_killed_and_resumed, free_port, gloo_process, moe_trainer
from .test_curriculum import recipe_dict

# The router's input jitter is off: with it, process 1 draws other noise for its micro-batch than
# one process does for its second, which moves the training loss by ~2.5e-5 relative (measured).
# Without it the two layouts compute the same numbers: losses and gradient norms came out equal,
# validation losses within 1.4e-8 relative and weights within 2.2e-7 after 4 steps (measured);
# the tolerances leave room for another BLAS.
TOLERANCE, WEIGHTS = 1e-6, 1e-6
def _validation(run):
    """The validation split less one music item: one process evaluates a music batch, the other none,
    so evaluation must run a discarded batch on the second (every forward is an all-to-all)."""
    music = [i for i, g in enumerate(run.val_set.groups) if g == "music"]
    return run.val_set.select([i for i in range(len(run.val_set)) if i != music[-1]])


def _trainer(run, out, grad_accum, moe=None, **changes):
    return moe_trainer(run, out, grad_accum, moe or moe_config(run, router_jitter=0.0), _validation(run), **changes)


def _worker(rank: int, world: int, port: int, recipe: dict, out: str) -> None:
    with gloo_process(rank, world, port, recipe) as run:
        def trainer(name, **changes):
            return _trainer(run, os.path.join(out, name), 1, parallel="ep", **changes)

        fit_killed_and_resumed(trainer, out, rank)
        # Groups of one process: each holds every expert and averages them with its replica.
        trainer("replicas", expert_parallel=1).fit()
        refused = {}
        for name, changes in {"processes": {"expert_parallel": 4},
                              "experts": {"moe": moe_config(run, num_routed=3)}}.items():
            try:
                trainer(name, **changes)
            except UniMoEError as err:
                refused[name] = str(err)
        if rank == 0:
            Path(out, "refused.json").write_text(json.dumps(refused))


def test_two_expert_parallel_processes_match_one_process_and_resume_exactly(corpus, tmp_path):
    root = tmp_path / "run"
    recipe = recipe_dict(corpus, root)
    run = prepare(recipe_from_dict(recipe), DistInfo(), progress=False)
    one = _trainer(run, root / "one", grad_accum=2).fit()
    mp.spawn(_worker, args=(2, free_port(), recipe, str(root)), nprocs=2)

    rows = {name: read_metrics(root / name / "metrics.jsonl") for name in ("one", "a", "b", "replicas")}
    for name in ("a", "replicas"):
        assert [r["step"] for r in rows[name]] == [r["step"] for r in rows["one"]] == [1, 2, 3, 4]
        for r1, r2 in zip(rows["one"], rows[name]):
            for key in ("loss", "grad_norm", "eval/loss", "eval/music"):
                assert (key in r1) == (key in r2)
                if key in r1:
                    assert r2[key] == pytest.approx(r1[key], rel=TOLERANCE), (name, r1["step"], key)
    # Killed at step 3, resumed from the step-2 checkpoint: the very same run.
    assert [(r["loss"], r.get("eval/loss")) for r in rows["b"]] == [(r["loss"], r.get("eval/loss")) for r in rows["a"]]

    # The checkpoint is the single-process format: a model and optimizer of one process load it
    # as is, and it holds exactly the experts fit() gathered at the end.
    checkpoint = list_checkpoints(root / "a" / "checkpoints")[-1]
    assert checkpoint.name == "step-0000004.pt"
    state = torch.load(checkpoint, weights_only=False)
    single = UniMoEAudioModel(UniMoEAudioConfig.from_dict(json.loads((root / "a" / "stage.json").read_text())["model"]))
    single.load_state_dict(state["model"])
    build_optimizer(single, StageConfig(**STAGE)).load_state_dict(state["optimizer"])
    reference = torch.load(root / "one" / "checkpoints" / checkpoint.name, weights_only=False)["optimizer"]

    def shapes(optimizer_state):
        return {i: {k: v.shape for k, v in s.items()} for i, s in optimizer_state["state"].items()}

    assert shapes(state["optimizer"]) == shapes(reference)  # AdamW's moments of the whole experts
    gathered = torch.load(root / "a.pt")
    assert set(gathered) == set(single.state_dict())
    assert all(torch.equal(single.state_dict()[k], v) for k, v in gathered.items())
    for key, value in one.state_dict().items():  # the weights one process trained
        torch.testing.assert_close(gathered[key], value, rtol=0, atol=WEIGHTS, msg=key)

    refused = json.loads((root / "refused.json").read_text())
    assert "expert_parallel 4 does not divide the 2 processes" in refused["processes"]
    assert "[3] routed experts per layer cannot be split evenly over expert_parallel 2" in refused["experts"]
