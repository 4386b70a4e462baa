"""Stage 2 building blocks: exact FFN splitting, expert loading, freezing for the warm-up."""

import pytest
import torch

from unimoe_audio.errors import UniMoEError
from unimoe_audio.moe import DCMoE, DCMoEConfig, SwiGLU
from unimoe_audio.train.upcycle import freeze_for_warmup, load_experts, split_ffn


def test_slices_summed_with_weight_one_reproduce_the_dense_ffn():
    torch.manual_seed(0)
    ffn = SwiGLU(16, 24)
    x = torch.randn(10, 16)
    w_gate, w_up, w_down = split_ffn(ffn, 3)
    assert w_gate.shape == (3, 8, 16) and w_down.shape == (3, 16, 8)
    total = sum((torch.nn.functional.silu(x @ w_gate[j].T) * (x @ w_up[j].T)) @ w_down[j].T for j in range(3))
    torch.testing.assert_close(total, ffn(x), rtol=1e-5, atol=1e-6)


def test_loaded_moe_experts_through_dispatch_reproduce_each_specialist():
    """Routing every token to all of one specialist's experts with weight 1 gives that specialist's FFN."""
    torch.manual_seed(0)
    ffns = [SwiGLU(16, 24), SwiGLU(16, 24)]
    moe = DCMoE(DCMoEConfig(hidden_size=16, num_routed=4, routed_size=12, num_null=1, num_shared=1, shared_size=4))
    load_experts(moe, ffns)
    x = torch.randn(7, 16)
    for s, ffn in enumerate(ffns):
        mask = torch.zeros(7, 4, dtype=torch.bool)
        mask[:, 2 * s: 2 * s + 2] = True
        out = moe.experts(x, mask, mask.float())
        torch.testing.assert_close(out, ffn(x), rtol=1e-5, atol=1e-6)


def test_split_that_is_not_exact_is_refused():
    with pytest.raises(UniMoEError, match="slices_per_specialist"):
        split_ffn(SwiGLU(8, 10), 3)


def test_freeze_for_warmup_leaves_only_gates_and_shared_experts():
    moe = DCMoE(DCMoEConfig(hidden_size=8, num_routed=2, routed_size=4, num_null=1, num_shared=1, shared_size=4))
    model = torch.nn.ModuleDict({"ffn": moe, "proj": torch.nn.Linear(8, 8)})
    names = freeze_for_warmup(model)
    assert names == ["ffn.gate.weight", "ffn.shared_down.weight", "ffn.shared_gate_up.weight"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(names)
    with pytest.raises(UniMoEError, match="no DCMoE"):
        freeze_for_warmup(torch.nn.Linear(2, 2))
