"""Cached autoregressive generation with classifier-free guidance and the delay pattern's rules.

One batched forward per step covers every request's conditional and unconditional rows
(logits = cond + s·(cond − uncond), REFERENCE.md §5). Codebook k holds BOS for its first
delays[k] steps; once codebook 0 emits EOS at step e, codebook k is forced to EOS at step
e + delays[k] and PAD after. EOS is taken only when it is codebook 0's most likely token (as
in the released code) and never before `min_frames`; it is forced at `max_frames`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from unimoe_audio.codec.delay import DelayPattern
from unimoe_audio.errors import UniMoEError
from unimoe_audio.model.frontend import TextFrontend
from unimoe_audio.model.sequence import Request, encode_prompt
from unimoe_audio.model.transformer import KVCache, UniMoEAudioModel

DEFAULT_GUIDANCE = {"tts": 1.0, "clone": 1.0, "t2m": 3.0}
PerCodebook = float | int | Sequence[float]


@dataclass
class GenerationConfig:
    """Sampling settings; temperature, top_k and top_p take one value or one per codebook."""

    max_frames: int = 1000  # 20 s at 50 frames/s
    min_frames: int = 0
    guidance_scale: float | None = None  # None: DEFAULT_GUIDANCE for the request's task
    temperature: PerCodebook = 1.0
    top_k: PerCodebook = 45
    top_p: PerCodebook = 1.0
    seed: int | None = None
    moe_top_p: float | None = None  # inference-time Top-P override for the DCMoE layers

    def __post_init__(self) -> None:
        if self.max_frames < 1 or not 0 <= self.min_frames <= self.max_frames:
            raise UniMoEError(f"need 0 <= min_frames <= max_frames and max_frames >= 1, got {self.min_frames}, {self.max_frames}")
        if self.guidance_scale is not None and self.guidance_scale < 0:
            raise UniMoEError(f"guidance_scale must be >= 0, got {self.guidance_scale}")
        if self.moe_top_p is not None and not 0 < self.moe_top_p <= 1:
            raise UniMoEError(f"moe_top_p must be in (0, 1], got {self.moe_top_p}")

    def per_codebook(self, name: str, k: int, device) -> torch.Tensor:
        value = getattr(self, name)
        values = [value] * k if isinstance(value, (int, float)) else list(value)
        if len(values) != k:
            raise UniMoEError(f"{name} needs one value or {k} (one per codebook), got {len(values)}")
        t = torch.tensor(values, dtype=torch.float32, device=device)
        if name == "temperature" and (t < 0).any() or name == "top_k" and (t < 0).any() \
                or name == "top_p" and ((t <= 0) | (t > 1)).any():
            raise UniMoEError(f"invalid {name}: {values}")
        return t


def sample(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
           generator: torch.Generator | None) -> torch.Tensor:
    """logits [B, K, V] -> tokens [B, K]; per-codebook settings [K]; temperature 0 = greedy."""
    greedy = logits.argmax(-1)
    t = temperature.clamp_min(1e-5)[None, :, None]
    vocab = logits.shape[-1]
    k = torch.where(top_k > 0, top_k, torch.full_like(top_k, vocab)).long()
    # only the largest top-k candidates can be drawn: a partial sort of those is enough
    ordered, order = (logits / t).topk(min(int(k.max()), vocab), dim=-1)
    rank = torch.arange(ordered.shape[-1], device=logits.device)
    ordered = ordered.masked_fill(rank[None, None, :] >= k[None, :, None], float("-inf"))
    probs = ordered.softmax(-1)  # top-p then acts on the top-k distribution, as in transformers
    ordered = ordered.masked_fill((probs.cumsum(-1) - probs) >= top_p[None, :, None], float("-inf"))  # smallest prefix reaching top_p
    choice = torch.multinomial(ordered.softmax(-1).flatten(0, 1), 1, generator=generator).view(logits.shape[:2])
    sampled = order.gather(-1, choice[..., None])[..., 0]
    return torch.where(temperature[None, :] == 0, greedy, sampled)


class Generator:
    """Runs requests through a model: `run()` returns aligned codes, `steps()` yields progress."""

    def __init__(self, model: UniMoEAudioModel, frontend: TextFrontend):
        self.model, self.frontend = model, frontend
        c = model.config
        self.pattern = DelayPattern(c.delays, c.codebook_size)

    def steps(self, requests: list[Request], config: GenerationConfig) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yields (delayed frames so far [B, K, s], eos step per request [B], -1 = not yet) each step."""
        if not requests:
            raise UniMoEError("nothing to generate: no requests")
        model, pattern = self.model, self.pattern
        device = next(model.parameters()).device
        k, c = pattern.num_codebooks, model.config
        scales = torch.tensor([r.guidance_scale if r.guidance_scale is not None else DEFAULT_GUIDANCE[r.task]
                               if config.guidance_scale is None else config.guidance_scale for r in requests],
                              device=device)
        guided = bool((scales != 0).any())
        prompts = [encode_prompt(self.frontend, pattern, r, True) for r in requests]
        if guided:
            prompts += [encode_prompt(self.frontend, pattern, r, False) for r in requests]
        rows, b = len(prompts), len(requests)
        width = max(p.tokens.shape[0] for p in prompts)
        total = width + config.max_frames + 1 + pattern.max_delay
        if total > c.max_positions:
            raise UniMoEError(f"prompt ({width}) + {config.max_frames} frames exceeds the model's {c.max_positions} "
                              "positions; ask for a shorter duration")
        tokens = torch.full((rows, width), self.frontend["<pad>"], dtype=torch.long)
        audio = torch.full((rows, k, width), pattern.pad, dtype=torch.long)
        is_audio = torch.zeros(rows, width, dtype=torch.bool)
        valid = torch.zeros(rows, width, dtype=torch.bool)
        for i, p in enumerate(prompts):  # left-padded so every row's next position is the same
            n = p.tokens.shape[0]
            tokens[i, width - n:], audio[i, :, width - n:], is_audio[i, width - n:] = p.tokens, p.audio, p.is_audio
            valid[i, width - n:] = True
        tokens, audio, is_audio, valid = (t.to(device) for t in (tokens, audio, is_audio, valid))
        positions = (valid.long().cumsum(-1) - 1).clamp_min(0)

        temperature, top_k, top_p = (config.per_codebook(n, k, device) for n in ("temperature", "top_k", "top_p"))
        gen = torch.Generator(device=device)
        gen.manual_seed(torch.seed() if config.seed is None else config.seed)
        delays = torch.tensor(pattern.delays, device=device)
        eos_at = torch.full((b,), -1, dtype=torch.long, device=device)
        frames = torch.empty(b, k, 0, dtype=torch.long, device=device)
        cache = KVCache(c, rows, total, device, next(model.parameters()).dtype)
        cache.key_valid[:, :width] = valid
        causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
        mask = (causal[None] & valid[:, None, :]) | torch.eye(width, dtype=torch.bool, device=device)[None]

        model.set_top_p(config.moe_top_p)
        try:
            with torch.inference_mode():
                hidden, _, _ = model.hidden(tokens, audio, is_audio, positions, pad_mask=~valid, cache=cache,
                                            attn_mask=mask[:, None])
                cache.length = width
                next_pos = positions[:, -1:] + 1
                for step in range(config.max_frames + 1 + pattern.max_delay):
                    logits = model.logits(hidden[:, -1]).float()  # [rows, K, V]
                    if guided:
                        cond, uncond = logits[:b], logits[b:]
                        logits = cond + scales[:, None, None] * (cond - uncond)
                    frame = self._constrain(logits, step, eos_at, delays, config, temperature, top_k, top_p, gen)
                    frames = torch.cat([frames, frame[..., None]], dim=-1)
                    yield frames, eos_at
                    if bool((eos_at >= 0).all()) and step >= int(eos_at.max()) + pattern.max_delay:
                        return
                    feed = frame.repeat(2, 1) if guided else frame
                    cache.key_valid[:, cache.length] = True
                    step_mask = cache.key_valid[:, None, None, :cache.length + 1]
                    hidden, _, _ = model.hidden(torch.full((rows, 1), self.frontend["<audio>"], device=device),
                                                feed[..., None], torch.ones(rows, 1, dtype=torch.bool, device=device),
                                                next_pos, cache=cache, attn_mask=step_mask)
                    cache.length += 1
                    next_pos = next_pos + 1
        finally:
            model.set_top_p(None)

    def _constrain(self, logits, step, eos_at, delays, config, temperature, top_k, top_p, gen) -> torch.Tensor:
        """Sample one delayed frame [B, K] under the delay pattern's rules."""
        p = self.pattern
        codes_only = logits.clone()
        codes_only[..., p.codebook_size:] = float("-inf")
        frame = sample(codes_only, temperature, top_k, top_p, gen)
        if step >= max(config.min_frames, 1):  # codebook 0 may end the audio where EOS is its arg-max
            wants_eos = (logits[:, 0].argmax(-1) == p.eos) | (step >= config.max_frames)
            newly = (eos_at < 0) & wants_eos
            eos_at[newly] = step
        ended = eos_at >= 0
        offset = step - eos_at[:, None]  # [B, 1] steps since codebook 0's EOS
        frame = torch.where(ended[:, None] & (offset == delays[None]), torch.full_like(frame, p.eos), frame)
        frame = torch.where(ended[:, None] & (offset > delays[None]), torch.full_like(frame, p.pad), frame)
        frame = torch.where(step < delays[None], torch.full_like(frame, p.bos), frame)
        return frame

    def run(self, requests: list[Request], config: GenerationConfig, progress=None) -> list[torch.Tensor]:
        """Aligned codes [K, T_i] per request."""
        frames = eos_at = None
        for frames, eos_at in self.steps(requests, config):
            if progress is not None:
                progress.update(1)
        aligned = self.pattern.revert(frames[:, :, : int(eos_at.max()) + 1 + self.pattern.max_delay])
        return [aligned[i, :, : int(eos_at[i])].cpu() for i in range(len(requests))]
