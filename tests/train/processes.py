"""Shared by the training tests: gloo process groups on loopback, and a run killed mid-step."""

import os
import socket
from contextlib import contextmanager

import torch
import torch.distributed as dist

from unimoe_audio.train.config import recipe_from_dict
from unimoe_audio.train.curriculum import prepare
from unimoe_audio.train.distributed import DistInfo


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


def killed_at(trainer, step: int):
    """`trainer`, whose `fit()` raises KeyboardInterrupt when it reaches `step` (after the checkpoints before it)."""
    original = trainer.train_step

    def dying_step():
        if trainer.step == step:
            raise KeyboardInterrupt
        return original()

    trainer.train_step = dying_step
    return trainer
