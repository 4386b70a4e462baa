"""Training throughput of the tiny and small presets, dense vs DCMoE, on this machine.

Prints audio+text positions per second for forward+backward+AdamW, the FLOP/s that implies
(6 × active non-embedding parameters per position, plus attention) and its fraction of this
CPU's fp32 peak (measured in the same run with a large matmul), and the DCMoE/dense ratio.
Synthetic sequences with the tiny corpus's shape: batch 8, speech ~250 frames, music 150.
`--shipped` measures the shipped model's dense shape instead (6 × 256, 32 codebooks at delay 0:
8 bands × 4 frames per step) with codebooks of 256, 512 and 1024 codes (a codec grown for
Mandarin and music, `codec extend`) and with `self_feed` (scheduled sampling's extra pass), as
ratios to 256 codes without it.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from unimoe_audio.codec import DelayPattern
from unimoe_audio.data import Example
from unimoe_audio.model import FrontendPrompts, SequenceCollator, TextFrontend, UniMoEAudioConfig, UniMoEAudioModel
from unimoe_audio.train.self_feed import fed_own_predictions

TEXTS = {"en": "The birch canoe slid on the smooth planks.", "zh": "今天天气很好"}


def peak_flops(seconds: float = 2.0) -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return 2 * 2048 ** 3 * n / (time.perf_counter() - start)


def batch(frontend, pattern, rng, size=8):
    examples = []
    for i in range(size):
        kind = ("en", "zh", "music")[i % 3]
        frames = 150 if kind == "music" else int(rng.integers(150, 300))
        codes = torch.from_numpy(rng.integers(0, pattern.codebook_size, (pattern.num_codebooks, frames)))
        meta = ({"task": "t2m", "group": "music", "caption": "a fiddle tune on violin at 120 bpm in d major"}
                if kind == "music" else {"task": "tts", "group": f"speech-{kind}", "language": kind,
                                         "text": TEXTS[kind], "speaker": f"{kind}_a"})
        examples.append(Example(meta=meta, codes=codes, prompt_codes=None))
    return SequenceCollator(FrontendPrompts(frontend, pattern))(examples)


def active_params(model: UniMoEAudioModel, experts_per_token: float | None) -> float:
    total = 0.0
    for name, p in model.named_parameters():
        if name.startswith(("embed_", "head")):
            continue
        share = 1.0
        if ".ffn.experts." in name and experts_per_token is not None:
            share = experts_per_token / model.config.moe.num_routed
        total += p.numel() * share
    return total + model.head.weight.numel()


def measure(config: UniMoEAudioConfig, data: dict, steps: int, self_feed: float = 0.0) -> tuple[float, float]:
    torch.manual_seed(0)
    model = UniMoEAudioModel(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    positions = int((~data["pad_mask"]).sum())
    experts = []
    frames = torch.Generator().manual_seed(0)

    def step():
        fed = fed_own_predictions(model, data, config.codebook_size, self_feed, frames)
        out = model(**fed, aux_weight=0.01)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        experts.append(out.experts_per_token)

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    rate = positions * steps / (time.perf_counter() - start)
    e = None if experts[-1] is None else float(np.mean(experts[1:]))
    seq = data["tokens"].shape[1]
    attn = 6 * 2 * config.num_layers * config.hidden_size * seq  # QK^T and AV, forward + backward
    return rate, rate * (6 * active_params(model, e) + attn)


def shipped(frontend: TextFrontend, rng: np.random.Generator, steps: int) -> None:
    base = UniMoEAudioConfig.preset("small", intermediate_size=1024, num_codebooks=32, delays=(0,) * 32,
                                    text_vocab_size=len(frontend)).dense()
    print("| codes per codebook | self_feed | positions/s | throughput relative to 256 codes, no self_feed |")
    print("|---|---|---|---|")
    baseline = None
    for size in (256, 512, 1024):
        config = replace(base, codebook_size=size)
        data = batch(frontend, DelayPattern(config.delays, size), rng, size=16)
        for share in (0.0, 0.5):
            rate, _ = measure(config, data, steps, share)
            baseline = baseline or rate
            print(f"| {size} | {share} | {rate:,.0f} | {rate / baseline:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--shipped", action="store_true", help="the shipped shape: output layer size and self_feed")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    steps = 3 if args.quick else 10
    peak = peak_flops(1.0 if args.quick else 3.0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32; measured matmul peak {peak / 1e9:.0f} GFLOP/s")
    frontend = TextFrontend(sorted(set("".join(TEXTS.values()) + "abcdefghijklmnopqrstuvwxyz ɪəɛæʊðθŋʃʒɹɚˈˌː12345")),
                            ["en_a", "zh_a"])
    rng = np.random.default_rng(0)
    if args.shipped:
        return shipped(frontend, rng, steps)
    print("| preset | FFN | positions/s | GFLOP/s | share of peak | DCMoE / dense throughput |")
    print("|---|---|---|---|---|---|")
    for preset in ("tiny", "small"):
        config = UniMoEAudioConfig.preset(preset, codebook_size=256, text_vocab_size=len(frontend))
        data = batch(frontend, DelayPattern(config.delays, 256), rng)
        dense_rate, dense_flops = measure(config.dense(), data, steps)
        moe_rate, moe_flops = measure(config, data, steps)
        for name, rate, flops in (("dense", dense_rate, dense_flops), ("DCMoE", moe_rate, moe_flops)):
            ratio = f"{moe_rate / dense_rate:.2f}x" if name == "DCMoE" else ""
            print(f"| {preset} | {name} | {rate:,.0f} | {flops / 1e9:.1f} | {flops / peak:.1%} | {ratio} |")


if __name__ == "__main__":
    main()
