"""DelayPattern: exact round trips, BOS/EOS/PAD placement, the paper's pattern."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unimoe_audio.codec import DelayPattern
from unimoe_audio.errors import UniMoEError


def test_paper_pattern():
    p = DelayPattern.paper(1024)
    assert p.delays == (0, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
    assert (p.eos, p.pad, p.bos, p.vocab_size) == (1024, 1025, 1026, 1027)


@settings(max_examples=100, deadline=None)
@given(
    delays=st.lists(st.integers(0, 6), min_size=1, max_size=5),
    batch=st.integers(1, 3),
    length=st.integers(0, 12),
    eos=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_apply_then_revert_is_exact(delays, batch, length, eos, seed):
    p = DelayPattern(delays, codebook_size=16)
    codes = torch.randint(0, 16, (batch, len(delays), length), generator=torch.Generator().manual_seed(seed))
    delayed = p.apply(codes, eos=eos)
    assert delayed.shape == (batch, len(delays), length + int(eos) + p.max_delay)
    aligned = p.revert(delayed)
    assert torch.equal(aligned[..., :length], codes)
    if eos:
        assert torch.all(aligned[..., length] == p.eos)
        assert torch.all(p.lengths(aligned) == length)
    for k, d in enumerate(delays):
        assert torch.all(delayed[:, k, :d] == p.bos)
        assert torch.all(delayed[:, k, d + length + int(eos):] == p.pad)


def test_lengths_without_eos_is_full_length():
    p = DelayPattern.uniform(3, 8)
    assert p.lengths(torch.zeros(2, 3, 5, dtype=torch.long)).tolist() == [5, 5]


def test_out_of_range_codes_and_bad_shapes_raise():
    p = DelayPattern.uniform(2, 8)
    with pytest.raises(UniMoEError, match="codes must lie"):
        p.apply(torch.full((1, 2, 3), 8))
    with pytest.raises(UniMoEError, match=r"\[B, 2, T\]"):
        p.apply(torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(UniMoEError):
        DelayPattern([], 8)
