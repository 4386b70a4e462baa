"""Device choice in train/distributed.setup: what `--device` means, and the errors for devices that are not there."""

import pytest
import torch

from unimoe_audio.errors import UniMoEError
from unimoe_audio.train import distributed


def test_cpu_is_single_process_cpu():
    info = distributed.setup("cpu")
    assert (info.rank, info.world_size, info.device) == (0, 1, torch.device("cpu"))


@pytest.mark.parametrize("device, message", [("gpu", "unknown device"), ("cuda", "sees no CUDA GPU"),
                                             ("cuda:1", "sees no CUDA GPU")])
def test_unusable_devices_are_refused(monkeypatch, device, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UniMoEError, match=message):
        distributed.setup(device)


def test_plain_cuda_means_this_process_gpu(monkeypatch):
    """`--device cuda` under a launcher is the GPU of LOCAL_RANK; torch.cuda.set_device needs the index."""
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.setup("cuda").device == torch.device("cuda", 1)
    assert chosen == [torch.device("cuda", 1)]
    with pytest.raises(UniMoEError, match="does not exist: this machine has 2"):
        distributed.setup("cuda:2")
