"""The start-up memory check: the arithmetic of train/memory.py, and a run that does not fit the
device refused before anything moves or trains, while one that fits trains."""

import pytest
import torch

from unimoe_audio.errors import UniMoEError
from unimoe_audio.model.transformer import Block
from unimoe_audio.train import memory
from unimoe_audio.train.config import StageConfig, recipe_from_dict
from unimoe_audio.train.curriculum import fresh, prepare
from unimoe_audio.train.distributed import DistInfo
from unimoe_audio.train.trainer import Trainer

from .test_curriculum import recipe_dict


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    return prepare(recipe_from_dict(recipe_dict(corpus, tmp_path_factory.mktemp("memory") / "run")), DistInfo(),
                   progress=False)


def _trainer(run, out):
    config = StageConfig(steps=1, lr=1e-3, batch_size=4, eval_every=1, eval_batches=1, checkpoint_every=1)
    return Trainer(fresh(run, run.base), config, run.train_set, run.collate, out, progress=False)


def test_parameter_states_per_layout():
    """fp32: 16 bytes per trainable parameter, 4 per frozen one; FSDP halves them and adds two gathered
    blocks (and one block's gradients when every weight trains); EP halves the routed experts only."""
    class OneBlock(Block):
        def __init__(self):
            torch.nn.Module.__init__(self)
            self.w = torch.nn.Parameter(torch.zeros(10))

    model = torch.nn.ModuleDict({"block": OneBlock(), "experts": torch.nn.Linear(4, 8, bias=False),
                                 "head": torch.nn.Linear(4, 2, bias=False)})
    model["head"].weight.requires_grad_(False)
    b = memory.parameter_bytes(torch.nn.ModuleDict({"m": model}))
    assert (b.dense, b.routed, b.block) == (16 * 10 + 4 * 8, 16 * 32, 10)
    assert memory.per_process(b, "ddp", 2, 4, False) == 16 * 42 + 32
    assert memory.per_process(b, "fsdp", 2, 4, True) == (16 * 42 + 32) / 2 + 2 * 4 * 10 + 4 * 10
    assert memory.per_process(b, "ep", 2, 4, False) == 16 * 10 + 32 + 16 * 32 / 2
    assert memory.per_process(b, "fsdp", 1, 4, True) == 16 * 42 + 32  # nothing to shard or gather


def test_a_run_that_does_not_fit_is_refused_before_any_step(run, tmp_path, monkeypatch):
    params = sum(p.numel() for p in fresh(run, run.base).parameters())
    monkeypatch.setattr(memory, "available_bytes", lambda device, processes: 1e5)  # 0.1 MB "free"
    with pytest.raises(UniMoEError) as err:
        _trainer(run, tmp_path / "small")
    message = str(err.value)
    assert f"but cpu has {(1e5 + 4 * params) / 1e6:.1f} MB available" in message  # the model is already in RAM
    assert f"weights, gradients and AdamW states {16 * params / 1e6:.1f} MB" in message  # fp32, all trainable
    assert "an estimate for micro-batches of 4 ×" in message and "× hidden 32 × 2 layers" in message
    for advice in ("a smaller batch_size", "a larger grad_accum", "parallel: fsdp", "LoRA"):
        assert advice in message
    assert not (tmp_path / "small").exists()  # nothing written, no step taken

    monkeypatch.undo()  # the machine's own memory: a tiny model fits and trains
    trainer = _trainer(run, tmp_path / "fits")
    trainer.fit()
    assert trainer.step == 1
