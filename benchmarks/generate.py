"""Generation speed and the inference-time MoE Top-P override.

Part 1 (random weights; presets tiny and small, and small with 9 layers ≈ 20 M parameters; 12
codebooks × 1024 codes): 10 s of music (500 frames) with classifier-free guidance at batch 1 —
frames/s, real-time factor, peak resident memory — against the same model decoding without a cache (recomputing the sequence
every step, greedy); first-chunk latency of streaming (25 frames = 0.5 s, decoded by a
12 × 1024 spectral codec). Part 2 (a trained model, `--model`, default
runs/curriculum-tiny/joint/model): per MoE Top-P, routed experts per token, teacher-forced
validation loss (the quality proxy) and guided generation speed. Part 3 (a trained speech model,
`--speech-model`): end-to-end text-to-speech of 5 s in a built-in English voice with guidance
(text front-end, prefill, decoding, codec decoding to a waveform), with the DCMoE's decode path
running only the experts the tokens selected against running all of them (the earlier path).
Part 4 (random weights; the shipped recipe's dense shape, 6 layers × 256, FFN 1024, with an
8 × 256 band codec): 5 s of audio with guidance end to end (decoding steps and Griffin-Lim) when
the codec stacks 1, 2 or 4 frames per step (`frames_per_step`), against 1 frame per step, and at
4 frames per step with output "expected" (each step's distributions kept and decoded as the
expected band vectors) against the chosen codes. `--parts 4` runs part 4 alone.
"""

from __future__ import annotations

import argparse
import resource
import time
from dataclasses import replace
from pathlib import Path

import torch

from unimoe_audio.codec import DelayPattern, SpectralCodec, SpectralCodecConfig
from unimoe_audio.data import TokenDataset
from unimoe_audio.eval.suite import corpus_of
from unimoe_audio.model.generate import DEFAULT_GUIDANCE
from unimoe_audio.model.sequence import FrontendPrompts
from unimoe_audio.model import (GenerationConfig, Generator, Request, SequenceCollator, TextFrontend, UniMoEAudio,
                                UniMoEAudioConfig, UniMoEAudioModel, load_model)
from unimoe_audio.moe import dispatch

DEFAULT = Path("runs/curriculum-tiny/joint/model")


def uncached_frames_per_s(gen: Generator, request: Request, frames: int) -> float:
    """Greedy decoding that re-runs the whole sequence every step (what a cache saves)."""
    model, pattern = gen.model, gen.pattern
    seg = gen.prompts.encode(request, True)
    tokens, audio, is_audio = seg.tokens[None], seg.audio[None], seg.is_audio[None]
    start = time.perf_counter()
    with torch.inference_mode():
        for step in range(frames):
            hidden, _, _ = model.hidden(tokens, audio, is_audio)
            frame = model.logits(hidden[:, -1]).argmax(-1)  # [1, K]
            frame = torch.where(step < torch.tensor(pattern.delays)[None], torch.full_like(frame, pattern.bos), frame)
            tokens = torch.cat([tokens, torch.full((1, 1), gen.prompts.audio_id)], 1)
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
    collate = SequenceCollator(FrontendPrompts(frontend, DelayPattern(model.config.delays, model.config.codebook_size)))
    model.set_top_p(top_p)
    losses, experts = [], []
    for start in range(0, len(data), 8):
        out = model(**collate([data[i] for i in range(start, min(start + 8, len(data)))]))
        losses.append(out.example_losses)
        experts.append(out.experts_per_token)
    model.set_top_p(None)
    return float(torch.cat(losses).mean()), sum(experts) / len(experts)


def first_chunk_latency(api: UniMoEAudio, request: Request, chunk: int = 25) -> float:
    start = time.perf_counter()
    next(iter(api.stream(request, GenerationConfig(max_frames=200, min_frames=200, seed=0), chunk_frames=chunk)))
    return time.perf_counter() - start


def part_one(frames: int) -> None:
    frontend = TextFrontend(list("abcdefghijklmnopqrstuvwxyz ,."), ["en_a"])
    codec_config = SpectralCodecConfig(griffin_lim_iters=32)
    codec = SpectralCodec(codec_config, torch.zeros(128), torch.ones(128), torch.randn(12, 1024, 128) * 0.1)
    request = Request(task="t2m", caption="a fiddle tune on violin at 120 bpm in d major")
    print(f"\n| preset (random weights) | parameters | guided frames/s | real-time factor | vs uncached greedy | peak RSS | first 0.5 s chunk |")
    print("|---|---|---|---|---|---|---|")
    for label, preset, fields in (("tiny", "tiny", {}), ("small", "small", {}), ("small, 9 layers", "small", {"num_layers": 9})):
        torch.manual_seed(0)
        model = UniMoEAudioModel(UniMoEAudioConfig.preset(preset, text_vocab_size=len(frontend), **fields)).eval()
        params = sum(p.numel() for p in model.parameters())
        gen = Generator(model, FrontendPrompts(frontend, DelayPattern(model.config.delays, model.config.codebook_size)))
        guided = cached_frames_per_s(gen, [request], frames, guidance_scale=3.0)
        greedy_cached = cached_frames_per_s(gen, [request], frames, temperature=0.0, guidance_scale=0.0)
        uncached = uncached_frames_per_s(gen, request, frames)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        latency = first_chunk_latency(UniMoEAudio(model, frontend, codec), request)
        print(f"| {label} | {params / 1e6:.1f} M | {guided:.0f} | {50 / guided:.3f} | {greedy_cached / uncached:.1f}x "
              f"({greedy_cached:.0f} vs {uncached:.1f} frames/s) | {rss:.0f} MiB | {latency:.2f} s |")


def part_two(model_dir: Path, frames: int) -> None:
    model, frontend = load_model(model_dir)
    if not model.moe_layers():
        return
    gen = Generator(model, FrontendPrompts(frontend, DelayPattern(model.config.delays, model.config.codebook_size)))
    request = Request(task="t2m", caption="a fiddle tune on violin at 120 bpm in d major")
    tokens = corpus_of(model_dir) / "tokens"
    base = model.moe_layers()[0].config.top_p
    print(f"\nTrained model {model_dir}:\n")
    print("| MoE Top-P at inference | routed experts/token | validation loss | guided frames/s (4 requests) | speed vs trained Top-P |")
    print("|---|---|---|---|---|")
    reference = None
    for top_p in (base, 0.5, 0.3, 0.1):
        loss, experts = validation_loss(model, frontend, tokens, top_p)
        speed = cached_frames_per_s(gen, [request] * 4, frames, moe_top_p=top_p)
        reference = reference or speed
        print(f"| {top_p}{' (trained)' if top_p == base else ''} | {experts:.2f} | {loss:.3f} | {speed:.1f} | {speed / reference:.2f}x |")


def best_of_three(api: UniMoEAudio, make_request, config: GenerationConfig) -> tuple[float, float, float, float]:
    """The fastest of 3 end-to-end runs (`make_request()`, generation, codec decoding) -> (total,
    generating, decoding seconds, seconds of audio made)."""
    best = None
    for _ in range(3):
        start = time.perf_counter()
        codes = api.generator.run([make_request()], config)
        generated = time.perf_counter()
        wave = api.decode_all(codes)[0]
        end = time.perf_counter()
        if best is None or end - start < best[0]:
            best = (end - start, generated - start, end - generated, len(wave) / api.sample_rate)
    return best


def part_three(model_dir: Path, seconds: float = 5.0) -> None:
    api = UniMoEAudio.from_pretrained(model_dir)
    speaker = next(s for s in api.speakers if "en" in api.frontend.speaker_languages.get(s, ["en"]))
    text = "The quick brown fox jumps over the lazy dog near the river bank today."
    frames = round(seconds * api.codec.frame_rate)
    config = GenerationConfig(max_frames=frames, min_frames=frames, seed=0)  # exactly `seconds` of speech
    api.tts(text, "en", speaker=speaker, config=replace(config, max_frames=10, min_frames=10))  # warm-up
    print(f"\nText-to-speech with {model_dir} ({sum(p.numel() for p in api.model.parameters()) / 1e6:.1f} M "
          f"parameters, guidance {DEFAULT_GUIDANCE['project']['tts']}), {seconds:g} s of speech, best of 3:\n")
    print("| DCMoE decode path | generation frames/s | codec decoding | end to end | real time × | vs all experts |")
    print("|---|---|---|---|---|---|")

    def every_expert(x, mask, weights, w_gate, w_up, w_down, used):  # the decode path before the selected-experts one
        return dispatch.all_experts(x, mask, weights, w_gate, w_up, w_down)

    used, reference = dispatch.used_experts, None
    for label, path in (("all experts (before)", every_expert), ("experts some token selected", used)):
        dispatch.used_experts = path
        total, generating, decoding, audio = best_of_three(api, lambda: api.request("tts", text, "en", speaker), config)
        dispatch.used_experts = used
        reference = reference or total
        print(f"| {label} | {frames / generating:.0f} | {decoding * 1e3:.0f} ms | {total:.2f} s | {audio / total:.2f} | "
              f"{reference / total:.2f}x |")


def part_four(seconds: float = 5.0) -> None:
    frontend = TextFrontend(list("abcdefghijklmnopqrstuvwxyz ,."), ["en_a"])
    request = Request(task="t2m", caption="a fiddle tune on violin at 120 bpm in d major")
    print(f"\nFrames per code step: {seconds:g} s of audio with guidance 3, random weights (6 layers × 256, FFN 1024; "
          "8 × 256 band codec), best of 3:\n")
    print("| frames per step | output | codebooks per step | decoding steps | generation | codec decoding | end to end | real time × | vs 1 frame per step |")
    print("|---|---|---|---|---|---|---|---|---|")
    reference = None
    for n, output in ((1, "codes"), (2, "codes"), (4, "codes"), (4, "expected")):
        codec = SpectralCodec(SpectralCodecConfig(num_codebooks=8, codebook_size=256, quantizer="bands", frames_per_step=n),
                              torch.zeros(128), torch.ones(128), torch.randn(8, 256, 128) * 0.1)
        torch.manual_seed(0)
        model = UniMoEAudioModel(UniMoEAudioConfig.preset("small", text_vocab_size=len(frontend), ffn="dense",
                                                          intermediate_size=1024, num_codebooks=codec.num_codebooks,
                                                          codebook_size=256, delays=codec.delays)).eval()
        api = UniMoEAudio(model, frontend, codec)
        steps = round(seconds * codec.frame_rate)
        config = GenerationConfig(max_frames=steps, min_frames=steps, seed=0, guidance_scale=3.0, output=output)
        api.generator.run([request], replace(config, max_frames=5, min_frames=5))  # warm-up
        total, generating, decoding, audio = best_of_three(api, lambda: request, config)
        reference = reference or total
        print(f"| {n} | {output} | {codec.num_codebooks} | {steps} | {generating:.2f} s | {decoding * 1e3:.0f} ms | {total:.2f} s | "
              f"{audio / total:.1f} | {reference / total:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=DEFAULT if DEFAULT.is_dir() else None)
    parser.add_argument("--speech-model", type=Path, help="a trained speech model for the end-to-end text-to-speech table")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--parts", default="1,2,3,4", help="which parts to run, e.g. 4")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    frames = 100 if args.quick else 500
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32")
    if "1" in parts:
        part_one(frames)
    if "2" in parts and args.model is not None:
        part_two(args.model, frames // 2)
    elif "2" in parts:
        print("\n(no trained model: run `unimoe-audio quickstart` or pass --model for the Top-P table)")
    if "3" in parts and args.speech_model is not None:
        part_three(args.speech_model)
    if "4" in parts:
        part_four()


if __name__ == "__main__":
    main()
