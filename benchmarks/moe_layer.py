"""DCMoE layer speed: sorted dispatch vs the released code's loop structure vs an equal-width dense FFN.

Prints tokens/s, ratios and the peak resident memory one call adds, all measured in this run.
`--quick` for a short run.
Regimes: training batches (forward + backward) and decode batches (forward only, 2–16 tokens),
where small experts take the used-experts path (each expert some token selected runs on every
token; all of them batched when most are busy) and the paper's large ones the sorted path.
Decode rows also print the rate at which each implementation reads its weights, beside the rates
at which a large fp32 matrix is read by a sum (the memory's ceiling) and by a 2-row linear layer.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import re
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from unimoe_audio.moe import DCMoE, DCMoEConfig, SwiGLU
from unimoe_audio.moe.dispatch import swiglu
from unimoe_audio.moe.routing import top_p_routing


def loop_reference(layer: DCMoE, x: torch.Tensor) -> torch.Tensor:
    """The released code's control flow: group tokens by how many experts they use, then loop
    over those groups and over experts with boolean masks (REFERENCE.md §9)."""
    c = layer.config
    logits = F.linear(x.float(), layer.gate.weight.float())[:, : c.num_dynamic]
    mask, weights = top_p_routing(logits, c.top_p)
    out = layer._shared(x, None)
    experts = list(zip(layer.experts.w_gate.unbind(0), layer.experts.w_up.unbind(0), layer.experts.w_down.unbind(0)))
    counts = mask.sum(-1)
    for k in counts.unique().tolist():  # loop over expert-count groups
        rows = (counts == k).nonzero().flatten()
        xs, ms, ws = x[rows], mask[rows], weights[rows]
        for e in range(c.num_routed):  # loop over experts, boolean mask per expert
            sel = ms[:, e]
            if sel.any():
                y = swiglu(xs[sel], *experts[e]) * ws[sel, e, None]
                out[rows[sel]] += y
    return out


def timeit(fn, repeats: int) -> float:
    """Median seconds per call (robust to the occasional stall of a shared machine)."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _status_mib(field: str) -> float:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) / 1024


def peak_mib(fn) -> float:
    """Resident memory one call adds at its peak (Linux: hand freed memory back to the system so an
    earlier call's cache does not hide this one's, reset the high-water mark, run, read it)."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_mib("VmRSS")
    fn()
    return _status_mib("VmHWM") - before


def read_gbs(repeats: int) -> tuple[float, float]:
    """GB/s at which a 256 MiB fp32 matrix is read by a sum (the memory's ceiling) and by a
    2-row linear layer (what a decode step's expert matmuls reach)."""
    w, x = torch.randn(8192, 8192), torch.randn(2, 8192)
    gb = w.numel() * 4 / 1e9
    return gb / timeit(w.sum, repeats), gb / timeit(lambda: F.linear(x, w), repeats)


def weight_gb(config: DCMoEConfig, routed_experts: int) -> float:
    """GB of fp32 weights a forward reads: the gate, `routed_experts` routed experts, the shared ones."""
    c = config
    return 4 * c.hidden_size * (c.num_dynamic + 3 * routed_experts * c.routed_size + 3 * c.num_shared * c.shared_size) / 1e9


def bench(name: str, config: DCMoEConfig, tokens: int, repeats: int, train: bool) -> None:
    torch.manual_seed(0)
    layer = DCMoE(config).train(train)
    x = torch.randn(tokens, config.hidden_size, requires_grad=train)
    with torch.no_grad():
        out = layer(x)
        mean_experts = out.num_experts.float().mean().item()
        used = int(out.expert_mask[:, : config.num_routed].any(0).sum())  # distinct routed experts the batch needs
    dense = SwiGLU(config.hidden_size, round(mean_experts * config.routed_size) + config.num_shared * config.shared_size)

    def run(f):
        if train:
            return lambda: f().sum().backward()
        return lambda: torch.no_grad()(f)()

    fns = [run(lambda: layer(x).hidden_states), run(lambda: loop_reference(layer, x)), run(lambda: dense(x))]
    t_moe, t_loop, t_dense = (timeit(f, repeats) for f in fns)
    memory = " / ".join(f"{peak_mib(f):.1f}" for f in fns)
    mode = "fwd+bwd" if train else "fwd"
    reads = ""
    if not train:
        read = config.num_routed if 2 * used > config.num_routed else used  # most experts busy: the layer runs all of them
        reads = f"{weight_gb(config, read) / t_moe:.1f} / {weight_gb(config, used) / t_loop:.1f}"
    print(f"| {name} | {mode} | {tokens} | {mean_experts:.2f} | {tokens / t_moe:,.0f} | {tokens / t_loop:,.0f} | "
          f"{tokens / t_dense:,.0f} | {t_loop / t_moe:.2f}x | {t_moe / t_dense:.2f}x | {memory} | {reads} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    tiny = DCMoEConfig(hidden_size=256, routed_size=512, shared_size=256, router_jitter=0.0)
    paper = DCMoEConfig(router_jitter=0.0)
    reps = 2 if args.quick else 5
    by_sum, by_linear = read_gbs(reps * 4)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32; a 256 MiB fp32 matrix is read at "
          f"{by_sum:.1f} GB/s by a sum, {by_linear:.1f} GB/s by a 2-row linear layer")
    print("| config | pass | tokens | experts/token | DCMoE tok/s | loop tok/s | equal-width dense tok/s | DCMoE vs loop | "
          "DCMoE time / dense time | peak MiB DCMoE / loop / dense | weights read, GB/s DCMoE / loop |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    bench("tiny d=256", tiny, 8192, reps, train=True)
    bench("paper d=2048", paper, 512 if args.quick else 1024, reps, train=True)
    for tokens in (2, 16):  # small experts take the used-experts path at these sizes, the paper's the sorted one
        bench("tiny d=256 decode", tiny, tokens, reps * 20, train=False)
        bench("paper d=2048 decode", paper, tokens, reps * 5, train=False)


if __name__ == "__main__":
    main()
