"""Top-P / Top-K routing against the paper's equations, row by row."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unimoe_audio.moe import top_k_routing, top_p_routing


def naive_top_p(logits_row, p):
    probs = torch.softmax(logits_row.double(), dim=-1).tolist()
    order = sorted(range(len(probs)), key=lambda i: (-probs[i], i))
    chosen, mass = [], 0.0
    for i in order:
        chosen.append(i)
        mass += probs[i]
        if mass >= p:
            break
    return set(chosen)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-6, 6, allow_nan=False), min_size=2, max_size=12),
    st.floats(0.05, 1.0),
)
def test_top_p_selects_smallest_set_reaching_p(row, p):
    logits = torch.tensor([row])
    mask, weights = top_p_routing(logits, p)
    probs = torch.softmax(logits.double(), dim=-1)[0]
    chosen = set(mask[0].nonzero().flatten().tolist())
    mass = probs[mask[0]].sum().item()
    assert mass >= p - 1e-5 or len(chosen) == len(row)
    # minimality: dropping the least probable chosen expert falls below p
    least = min(chosen, key=lambda i: probs[i].item())
    assert mass - probs[least].item() < p + 1e-5
    assert math.isclose(weights[0].sum().item(), 1.0, rel_tol=1e-5)
    assert torch.all(weights[0][~mask[0]] == 0)


def test_top_p_matches_naive_rows_and_eq3_weights():
    torch.manual_seed(0)
    logits = torch.randn(64, 9) * 2
    mask, weights = top_p_routing(logits, 0.7)
    for row in range(64):
        chosen = naive_top_p(logits[row], 0.7)
        assert set(mask[row].nonzero().flatten().tolist()) == chosen
        probs = torch.softmax(logits[row], -1)
        expected = torch.zeros(9)
        idx = list(chosen)
        expected[idx] = probs[idx] / probs[idx].sum()
        torch.testing.assert_close(weights[row], expected)


def test_ties_break_towards_lower_index():
    mask, _ = top_p_routing(torch.zeros(1, 4), 0.5)
    assert mask[0].tolist() == [True, True, False, False]
    mask, _ = top_k_routing(torch.zeros(1, 4), 1)
    assert mask[0].tolist() == [True, False, False, False]


def test_top_k_selects_exactly_k():
    torch.manual_seed(1)
    logits = torch.randn(32, 9)
    mask, weights = top_k_routing(logits, 3)
    assert torch.all(mask.sum(-1) == 3)
    top3 = logits.topk(3, dim=-1).indices
    assert torch.all(mask.gather(1, top3))
    torch.testing.assert_close(weights.sum(-1), torch.ones(32))
