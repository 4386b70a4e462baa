"""Shared by the training tests: gloo process groups on loopback, a small DCMoE stage's trainer,
and a run killed mid-step."""

import os
import socket
from contextlib import contextmanager
from dataclasses import replace

import torch
import torch.distributed as dist

from unimoe_audio.train.config import StageConfig, recipe_from_dict
from unimoe_audio.train.curriculum import fresh, moe_config, prepare
from unimoe_audio.train.distributed import DistInfo
from unimoe_audio.train.trainer import Trainer

# 4 steps, a checkpoint and an evaluation every 2: enough to kill a run after one checkpoint and resume it.
STAGE = dict(steps=4, lr=1e-3, batch_size=4, checkpoint_every=2, eval_every=2, eval_batches=1, mix="balanced",
             log_every=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def gloo_process(rank: int, world: int, port: int, recipe: dict):
    """This process as `rank` of `world` (gloo, one thread), yielding the recipe's prepared run."""
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        yield prepare(recipe_from_dict(recipe), DistInfo(rank, world, rank), progress=False)
    finally:
        dist.destroy_process_group()


def moe_trainer(run, out, grad_accum: int, moe=None, val_set=None, **changes) -> Trainer:
    """A fresh DCMoE model of `run` (its `moe` config, the recipe's by default) under a `STAGE` trainer."""
    model = fresh(run, replace(run.base, ffn="moe", moe=moe or moe_config(run)))
    return Trainer(model, StageConfig(grad_accum=grad_accum, **STAGE, **changes), run.train_set, run.collate, out,
                   val_set=run.val_set if val_set is None else val_set, seed=0, dist=run.dist, progress=False)


def killed_at(trainer, step: int):
    """`trainer`, whose `fit()` raises KeyboardInterrupt when it reaches `step` (after the checkpoints before it)."""
    original = trainer.train_step

    def dying_step():
        if trainer.step == step:
            raise KeyboardInterrupt
        return original()

    trainer.train_step = dying_step
    return trainer


def fit_killed_and_resumed(trainer, out: str, rank: int, **changes) -> None:
    """Trains `a` to the end (rank 0 saves its weights to out/a.pt), then `b` (with `changes`) killed
    after its step-2 checkpoint, mid-way through step 3, and resumed: the two must end alike."""
    model = trainer("a").fit()
    if rank == 0:
        torch.save(model.state_dict(), os.path.join(out, "a.pt"))
    try:
        killed_at(trainer("b", **changes), 3).fit()
    except KeyboardInterrupt:
        pass
    trainer("b", **changes).fit(resume=True)
