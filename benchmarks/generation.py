"""Generation speed: the preallocated KV cache vs recomputing the sequence each step, and the
inference-time MoE Top-P override's effect on speed and quality.

Uses a trained model when one is given (`--model runs/curriculum-tiny/joint/model`, default if it
exists): quality is its teacher-forced validation loss (codec loss, summed over codebooks) under
each Top-P, speed is frames/s of batched music generation (guided, 4 requests, 200 frames).
Without a trained model, a random tiny model gives the speed numbers only.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from unimoe_audio.codec import DelayPattern
from unimoe_audio.data import TokenDataset
from unimoe_audio.eval.suite import corpus_of
from unimoe_audio.model import GenerationConfig, Generator, Request, SequenceCollator, load_model

DEFAULT = Path("runs/curriculum-tiny/joint/model")


def uncached_frames_per_s(gen: Generator, request: Request, frames: int) -> float:
    """Greedy decoding that re-runs the whole sequence every step (what a cache saves)."""
    from unimoe_audio.model.sequence import encode_prompt

    model, pattern = gen.model, gen.pattern
    seg = encode_prompt(gen.frontend, pattern, request)
    tokens, audio, is_audio = seg.tokens[None], seg.audio[None], seg.is_audio[None]
    start = time.perf_counter()
    with torch.inference_mode():
        for step in range(frames):
            hidden, _ = model.hidden(tokens, audio, is_audio)
            frame = model.logits(hidden[:, -1]).argmax(-1)  # [1, K]
            frame = torch.where(step < torch.tensor(pattern.delays)[None], torch.full_like(frame, pattern.bos), frame)
            tokens = torch.cat([tokens, torch.full((1, 1), gen.frontend["<audio>"])], 1)
            audio = torch.cat([audio, frame[..., None]], 2)
            is_audio = torch.cat([is_audio, torch.ones(1, 1, dtype=torch.bool)], 1)
    return frames / (time.perf_counter() - start)


def cached_frames_per_s(gen: Generator, requests: list[Request], frames: int, **kw) -> float:
    config = GenerationConfig(max_frames=frames, min_frames=frames, seed=0, **kw)
    gen.run(requests, GenerationConfig(max_frames=5, min_frames=5, seed=0, **kw))  # warm-up
    start = time.perf_counter()
    gen.run(requests, config)
    return len(requests) * frames / (time.perf_counter() - start)


@torch.no_grad()
def validation_loss(model, frontend, tokens_dir: Path, top_p: float) -> float:
    data = TokenDataset(tokens_dir, "validation")
    collate = SequenceCollator(frontend, DelayPattern(model.config.delays, model.config.codebook_size))
    model.set_top_p(top_p)
    losses, experts = [], []
    for start in range(0, len(data), 8):
        out = model(**collate([data[i] for i in range(start, min(start + 8, len(data)))]))
        losses.append(out.example_losses)
        experts.append(out.experts_per_token)
    model.set_top_p(None)
    return float(torch.cat(losses).mean()), sum(experts) / len(experts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=DEFAULT if DEFAULT.is_dir() else None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    frames = 60 if args.quick else 200
    if args.model is None:
        raise SystemExit("train a model first (`unimoe-audio quickstart`) or pass --model DIR")
    model, frontend = load_model(args.model)
    gen = Generator(model, frontend)
    caption = "a fiddle tune on violin at 120 bpm in d major"
    one = Request(task="t2m", caption=caption)
    print(f"model {args.model}, torch {torch.__version__}, {torch.get_num_threads()} threads, fp32")
    slow = uncached_frames_per_s(gen, one, frames)
    fast = cached_frames_per_s(gen, [one], frames, temperature=0.0, guidance_scale=0.0)
    print(f"\n| decoding (1 request, greedy, {frames} frames) | frames/s | vs recompute |\n|---|---|---|")
    print(f"| recompute the sequence each step | {slow:.1f} | 1.00x |")
    print(f"| preallocated KV cache | {fast:.1f} | {fast / slow:.2f}x |")
    batch = cached_frames_per_s(gen, [one] * 4, frames)
    print(f"| KV cache, 4 requests, guided (8 rows) | {batch:.1f} | {batch / slow:.2f}x |")
    if model.moe_layers():
        tokens = corpus_of(args.model) / "tokens"
        base = model.moe_layers()[0].config.top_p
        print("\n| MoE Top-P at inference | routed experts/token | validation loss | frames/s (4 guided requests) | speed vs trained Top-P |")
        print("|---|---|---|---|---|")
        reference = None
        for top_p in (base, 0.5, 0.3, 0.1):
            loss, experts = validation_loss(model, frontend, tokens, top_p)
            speed = cached_frames_per_s(gen, [one] * 4, frames, moe_top_p=top_p)
            reference = reference or speed
            print(f"| {top_p}{' (trained)' if top_p == base else ''} | {experts:.2f} | {loss:.3f} | {speed:.1f} | {speed / reference:.2f}x |")


if __name__ == "__main__":
    main()
