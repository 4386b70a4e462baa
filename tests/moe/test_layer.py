"""DCMoE against a naive per-token implementation written from the equations."""

import math

import pytest
import torch
import torch.nn.functional as F

from unimoe_audio.errors import UniMoEError
from unimoe_audio.moe import AuxLossSchedule, DCMoE, DCMoEConfig, RoutingStats, dispatch


def tiny(**kw):
    base = dict(hidden_size=32, num_routed=4, routed_size=16, num_null=1, num_shared=2, shared_size=8,
                router_jitter=0.0)
    base.update(kw)
    return DCMoEConfig(**base)


def expert_out(layer, e, x):
    ex = layer.experts
    return (F.silu(x @ ex.w_gate[e].T) * (x @ ex.w_up[e].T)) @ ex.w_down[e].T


def shared_outs(layer, x):
    c = layer.config
    gate, up = layer.shared_gate_up.weight.chunk(2, dim=0)
    outs = []
    for s in range(c.num_shared):
        rows = slice(s * c.shared_size, (s + 1) * c.shared_size)
        h = F.silu(x @ gate[rows].T) * (x @ up[rows].T)
        outs.append(h @ layer.shared_down.weight[:, rows].T)
    return outs


def naive_paper(layer, x):
    """Eq. 2–3 per token, with a Python loop: the reference the vectorised layer must match."""
    c = layer.config
    outs = []
    for t in range(x.shape[0]):
        z = x[t] @ layer.gate.weight[: c.num_dynamic].T
        probs = torch.softmax(z, -1)
        order = sorted(range(c.num_dynamic), key=lambda i: (-probs[i].item(), i))
        if c.routing == "top_k":
            chosen = order[: c.top_k]
        else:
            chosen, mass = [], 0.0
            for i in order:
                chosen.append(i)
                mass += probs[i].item()
                if mass >= c.top_p:
                    break
        total = sum(probs[i] for i in chosen)
        y = sum(shared_outs(layer, x[t : t + 1]))[0]
        for i in chosen:
            if i < c.num_routed:
                y = y + probs[i] / total * expert_out(layer, i, x[t : t + 1])[0]
        outs.append(y)
    return torch.stack(outs)


@pytest.mark.parametrize("tokens", [40, 3], ids=["sorted-dispatch", "decode-used-experts"])
@pytest.mark.parametrize("routing", [dict(), dict(routing="top_k", top_k=2)])
def test_forward_and_gradients_match_naive(routing, tokens):
    torch.manual_seed(0)
    layer = DCMoE(tiny(**routing))
    x = torch.randn(tokens, 32, requires_grad=True)
    out = layer(x).hidden_states
    x2 = x.detach().clone().requires_grad_(True)
    ref = naive_paper(layer, x2)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x] + list(layer.parameters()), g)
    ref_grads = torch.autograd.grad(ref, [x2] + list(layer.parameters()), g, allow_unused=True)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, torch.zeros_like(a) if b is None else b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("tokens", [40, 3], ids=["sorted-dispatch", "decode-used-experts"])
def test_experts_no_token_selected_are_never_read(tokens):
    """An expert no token routes to cannot change the output, even with NaN weights: both paths
    (training-sized batches, and decode-sized ones whose tokens use few experts) skip it instead
    of weighting its output by 0."""
    torch.manual_seed(0)
    layer = DCMoE(tiny())
    x = torch.rand(tokens, 32)  # positive: expert 0's gate logit is about +16 and expert 3's -16 for every token
    with torch.no_grad():
        layer.gate.weight[0], layer.gate.weight[3] = 1.0, -1.0
        expected = layer(x).hidden_states
        assert not layer(x).expert_mask[:, 3].any()
        for w in (layer.experts.w_gate, layer.experts.w_up, layer.experts.w_down):
            w[3] = float("nan")
        torch.testing.assert_close(layer(x).hidden_states, expected)


def test_decode_paths_agree():
    """Running only the selected experts on every token gives the batched all-experts sum."""
    torch.manual_seed(0)
    x, weights = torch.randn(4, 32), torch.rand(4, 6)
    mask = torch.rand(4, 6) < 0.4
    w_gate, w_up, w_down = torch.randn(6, 16, 32), torch.randn(6, 16, 32), torch.randn(6, 32, 16)
    used = mask.any(0).nonzero().flatten().tolist()
    torch.testing.assert_close(dispatch.used_experts(x, mask, weights, w_gate, w_up, w_down, used),
                               dispatch.all_experts(x, mask, weights, w_gate, w_up, w_down), rtol=1e-4, atol=1e-4)


def naive_official(layer, x):
    """REFERENCE.md §3 steps 1–3, token by token."""
    c = layer.config
    outs = []
    for t in range(x.shape[0]):
        logits = x[t] @ layer.gate.weight.T
        z, zs = logits[: c.num_dynamic], logits[c.num_dynamic :]
        probs = torch.softmax(z, -1)
        order = sorted(range(c.num_dynamic), key=lambda i: (-z[i].item(), i))
        cum = torch.cumsum(probs[order], 0)
        k = 1 + int((cum[:-1] < c.top_p).sum())
        chosen = order[:k]
        r = {}
        for pos, i in enumerate(chosen):
            m = z[i]
            comp = [z[j] for j in order[pos:] if (m - z[j]) / max(abs(m.item()), abs(z[j].item())) <= 0.02]
            r[i] = torch.exp(m) / sum(torch.exp(v) for v in comp)
        rsum = sum(r.values())
        g = torch.softmax(torch.stack([z[i] for i in chosen] + list(zs)), -1)
        g_sel = g[: len(chosen)].sum()
        sh = shared_outs(layer, x[t : t + 1])
        y = sum(g[len(chosen) + s] * sh[s][0] for s in range(c.num_shared))
        for i in chosen:
            if i < c.num_routed:
                y = y + r[i] / rsum * g_sel * expert_out(layer, i, x[t : t + 1])[0]
        outs.append(y)
    return torch.stack(outs)


def test_official_weighting_matches_released_rule():
    torch.manual_seed(2)
    layer = DCMoE(tiny(weighting="official"))
    x = torch.randn(30, 32)
    with torch.no_grad():
        torch.testing.assert_close(layer(x).hidden_states, naive_official(layer, x), rtol=1e-4, atol=1e-5)


def test_experts_per_token_bounded_by_ceil_p_times_dynamic():
    torch.manual_seed(3)
    cfg = tiny(num_routed=8, top_p=0.7)
    out = DCMoE(cfg)(torch.randn(500, 32) * 5)
    per_token = out.expert_mask.sum(-1)
    assert per_token.min() >= 1 and per_token.max() <= math.ceil(0.7 * 9)
    assert out.num_experts.max() <= math.ceil(0.7 * 9)


def test_all_mass_on_null_leaves_only_shared_experts():
    torch.manual_seed(4)
    layer = DCMoE(tiny())
    with torch.no_grad():
        layer.gate.weight.zero_()
        layer.gate.weight[layer.config.num_routed] = 1.0  # null row
    x = torch.rand(20, 32) + 1.0  # positive inputs -> null logit dominates
    with torch.no_grad():
        layer.gate.weight[layer.config.num_routed] *= 50
        out = layer(x)
    assert out.num_experts.sum() == 0
    torch.testing.assert_close(out.hidden_states, sum(shared_outs(layer, x)))


def test_padding_tokens_get_no_experts_and_do_not_change_the_loss():
    torch.manual_seed(5)
    layer = DCMoE(tiny())
    x = torch.randn(2, 6, 32)
    pad = torch.tensor([[False] * 6, [False] * 3 + [True] * 3])
    out = layer(x, pad_mask=pad)
    flat_pad = pad.reshape(-1)
    assert not out.expert_mask[flat_pad].any()
    assert torch.all(out.hidden_states.reshape(-1, 32)[flat_pad] == 0)
    alone = layer(x.reshape(-1, 32)[~flat_pad])
    torch.testing.assert_close(out.aux_loss, alone.aux_loss)
    torch.testing.assert_close(out.hidden_states.reshape(-1, 32)[~flat_pad], alone.hidden_states)


def test_gradients_reach_gate_routed_and_shared():
    torch.manual_seed(6)
    layer = DCMoE(tiny())
    out = layer(torch.randn(64, 32))
    (out.hidden_states.square().mean() + 0.01 * out.aux_loss).backward()
    for name in ["gate.weight", "experts.w_gate", "experts.w_down", "shared_gate_up.weight", "shared_down.weight"]:
        grad = dict(layer.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_top_p_override_trades_experts_for_speed():
    torch.manual_seed(7)
    layer = DCMoE(tiny(num_routed=8)).eval()
    x = torch.randn(200, 32)
    full = layer(x).num_experts.float().mean()
    low = layer(x, top_p=0.3).num_experts.float().mean()
    assert low < full


@pytest.mark.parametrize("bad", [
    dict(top_p=0.0), dict(top_p=1.5), dict(num_routed=0), dict(routed_size=0),
    dict(routing="top_q"), dict(weighting="mine"), dict(routing="top_k"),
    dict(routing="top_k", top_k=99), dict(num_shared=1, shared_size=0),
])
def test_invalid_configs_raise_clear_errors(bad):
    with pytest.raises(UniMoEError, match="invalid DCMoEConfig"):
        tiny(**bad)


def test_aux_schedule_anneals_linearly_and_round_trips():
    sched = AuxLossSchedule(start=0.025, end=0.001, steps=100)
    assert sched.weight() == pytest.approx(0.025)
    for _ in range(50):
        sched.step()
    assert sched.weight() == pytest.approx(0.013)
    restored = AuxLossSchedule()
    restored.load_state_dict(sched.state_dict())
    assert restored.weight() == pytest.approx(0.013)
    for _ in range(200):
        restored.step()
    assert restored.weight() == pytest.approx(0.001)


def test_routing_stats_split_by_task_and_plot(tmp_path):
    torch.manual_seed(8)
    layer = DCMoE(tiny())
    stats = RoutingStats(task_names={0: "speech", 1: "music"})
    x = torch.randn(50, 32)
    tasks = torch.tensor([0] * 30 + [1] * 20)
    out = layer(x)
    stats.update(0, out.expert_mask, layer.config.num_routed, task_ids=tasks)
    d = stats.to_dict()["layers"]["0"]
    assert d["all"]["tokens"] == 50 and d["speech"]["tokens"] == 30 and d["music"]["tokens"] == 20
    assert sum(d["all"]["experts_per_token_hist"]) == pytest.approx(1.0, abs=1e-3)
    expected_null = out.expert_mask[:, -1].float().mean().item()
    assert d["all"]["null_rate"] == pytest.approx(expected_null, abs=1e-3)
    png = stats.plot(tmp_path / "routing.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_moe_demo_cli_writes_statistics_and_plot(tmp_path):
    from unimoe_audio.cli.main import main

    assert main(["moe-demo", "--hidden-size", "64", "--tokens", "256", "--layers", "2", "--out", str(tmp_path)]) == 0
    report = __import__("json").loads((tmp_path / "routing.json").read_text())
    assert set(report["layers"]) == {"0", "1"}
    assert (tmp_path / "routing.png").stat().st_size > 0
