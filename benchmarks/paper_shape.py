"""The released model's width with random weights: guided generation and the DCMoE layer.

Model: hidden 2048, 16/2 heads, 8 routed experts × 2752 + 1 null + 2 shared × 1376 with the
released weighting ("official"), 12 codebooks × 1027, the Qwen2.5 text vocabulary (151,936 rows),
`--layers` layers (default 2: the 36 of the release do not fit a CPU run).
(a) guided music generation with the released decoding (two rows, guidance 10), frames/s and peak
memory; (b) one DCMoE layer at a decode-sized and a prefill-sized input against the released
control flow (`released_loops`), outputs checked equal before timing.
`--device cuda --dtype bfloat16` runs the same on a GPU (the router stays in fp32).
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from moe_layer import timeit
from unimoe_audio.codec import DelayPattern
from unimoe_audio.model import GenerationConfig, Generator, Request, TextFrontend, UniMoEAudioConfig, UniMoEAudioModel
from unimoe_audio.model.sequence import FrontendPrompts
from unimoe_audio.moe import DCMoE, DCMoEConfig
from unimoe_audio.moe.dispatch import swiglu
from unimoe_audio.moe.routing import official_weights, top_p_routing

QWEN_VOCAB = 151936


def released_loops(layer: DCMoE, x: torch.Tensor) -> torch.Tensor:
    """The released code's control flow (REFERENCE.md §9): tokens grouped by their expert count k,
    a loop over the groups and, inside, over the experts, each writing its tokens' slots of a dense
    [tokens, k, D] buffer that is then weighted and summed. The routing and weights are this
    project's vectorised functions, so only the control flow is the released one."""
    c = layer.config
    logits = layer.gate(x)  # [N, E_dyn + N_s] fp32
    dyn, shared = logits[:, : c.num_dynamic], logits[:, c.num_dynamic:]
    mask, _ = top_p_routing(dyn, layer.top_p)
    weights, shared_scale = official_weights(dyn, shared, mask)
    out = layer._shared(x, shared_scale)
    experts = list(zip(layer.experts.w_gate, layer.experts.w_up, layer.experts.w_down))
    counts = mask.sum(-1)
    for k in counts.unique().tolist():  # loop over expert-count groups (a host sync each)
        rows = (counts == k).nonzero().flatten()
        chosen = dyn[rows].topk(k, dim=-1).indices  # [n, k]; the null expert's slot stays zero
        slots = x.new_zeros(rows.numel(), k, x.shape[-1])  # [n, k, D]
        for e in range(c.num_routed):  # loop over experts
            token, slot = (chosen == e).nonzero(as_tuple=True)
            if token.numel():
                slots[token, slot] = swiglu(x[rows[token]], *experts[e])
        out[rows] += (slots * weights[rows].gather(1, chosen)[..., None].to(x.dtype)).sum(1)
    return out


def synced(fn, device: torch.device):
    """fn followed by a wait for the device, so timings cover the work, not the launch."""
    if device.type != "cuda":
        return fn
    return lambda: (fn(), torch.cuda.synchronize())


def peak_mib(device: torch.device) -> float:
    """Peak memory so far: resident set on CPU, allocated device memory on CUDA."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generation(model: UniMoEAudioModel, frames: int, device: torch.device) -> None:
    frontend = TextFrontend(list("abcdefghijklmnopqrstuvwxyz ,."), ["en_a"])
    gen = Generator(model, FrontendPrompts(frontend, DelayPattern(model.config.delays, model.config.codebook_size)))
    request = Request(task="t2m", caption="a relaxing lo-fi hip hop beat with soft piano")

    def run(n: int) -> None:
        gen.run([request], GenerationConfig(decoding="released", max_frames=n, min_frames=n, seed=0))

    for _ in zip(range(2), gen.steps([request], GenerationConfig(decoding="released", seed=0))):
        pass  # warm-up: the prefill and one decode step
    start = time.perf_counter()
    synced(lambda: run(frames), device)()
    seconds = time.perf_counter() - start
    steps = frames + 1 + gen.pattern.max_delay  # the delay pattern's tail is decoded too
    print(f"\n| layers | parameters | frames | decode steps | guided frames/s | real-time factor | ms per step | peak memory |")
    print("|---|---|---|---|---|---|---|---|")
    params = sum(p.numel() for p in model.parameters())
    print(f"| {model.config.num_layers} | {params / 1e9:.2f} B | {frames} | {steps} | {frames / seconds:.1f} | "
          f"{50 / (frames / seconds):.2f} | {1000 * seconds / steps:.0f} | {peak_mib(device):,.0f} MiB |")


def layer_rows(layer: DCMoE, sizes: list[int], device: torch.device, dtype: torch.dtype) -> None:
    print("\n| tokens | experts/token | DCMoE ms | released loops ms | DCMoE vs loops | max abs difference |")
    print("|---|---|---|---|---|---|")
    for tokens in sizes:
        x = torch.randn(tokens, layer.config.hidden_size, device=device, dtype=dtype)
        with torch.inference_mode():
            out = layer(x)
            ours, loops = out.hidden_states, released_loops(layer, x)
            tol = 1e-4 if dtype == torch.float32 else 2e-2
            torch.testing.assert_close(ours, loops, rtol=tol, atol=tol)
            repeats = 10 if tokens <= 16 else 2  # after the check's call and timeit's warm-up
            t_ours = timeit(synced(lambda: layer(x), device), repeats)
            t_loops = timeit(synced(lambda: released_loops(layer, x), device), repeats)
        print(f"| {tokens} | {out.num_experts.float().mean():.2f} | {1000 * t_ours:.1f} | {1000 * t_loops:.1f} | "
              f"{t_loops / t_ours:.2f}x | {(ours - loops).abs().max():.1e} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--prefill", type=int, default=512, help="tokens of the prefill-sized layer input")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    moe = DCMoEConfig(weighting="official", router_jitter=0.0)
    config = UniMoEAudioConfig.preset("paper", num_layers=args.layers, moe=moe, text_vocab_size=QWEN_VOCAB)
    model = UniMoEAudioModel(config).to(device, dtype).eval()
    print(f"torch {torch.__version__}, {args.device}, {args.dtype}, {torch.get_num_threads()} threads; "
          f"paper width, {args.layers} layers, random weights")
    generation(model, args.frames, device)
    layer_rows(model.moe_layers()[0], [2, args.prefill], device, dtype)


if __name__ == "__main__":
    main()
