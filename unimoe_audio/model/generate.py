"""Cached autoregressive generation with classifier-free guidance and the delay pattern's rules.

One batched forward per step covers every request's conditional and unconditional rows
(logits = cond + s·(cond − uncond), REFERENCE.md §5). Codebook k holds BOS for its first
delays[k] steps; once codebook 0 emits EOS at step e, codebook k is forced to EOS at step
e + delays[k] and PAD after; EOS is forced at `max_frames`. A request's own `max_frames` /
`min_frames` override the config's, so speech and music of any lengths share one batch.

Two decoding rules choose each frame (`GenerationConfig.decoding`):
- "project": codes are sampled with per-codebook temperature/top-k/top-p; codebook 0 ends the
  audio whenever EOS is its most likely token, never before `min_frames`.
- "released": the released checkpoint's rule, reproduced draw for draw: before `min_frames` every
  special token is masked, after it codebook 0 may emit EOS (its logit multiplied by the EOS
  factor) and the others only codes; EOS survives sampling only where it is the arg-max; then
  top-k, the released top-p rule and one `torch.multinomial` over all [B·K, V] rows per step.
  The audio ends when codebook 0 *draws* EOS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Collection, Iterator, Protocol, Sequence

import torch

from unimoe_audio.codec.delay import DelayPattern
from unimoe_audio.errors import UniMoEError
from unimoe_audio.model.sequence import Request, Segment
from unimoe_audio.model.transformer import KVCache, UniMoEAudioModel

DECODINGS = ("project", "released")
# per decoding rule and task: guidance scale and EOS logit factor (REFERENCE.md §5 for "released")
DEFAULT_GUIDANCE = {"project": {"tts": 1.0, "clone": 1.0, "t2m": 3.0}, "released": {"tts": 1.0, "clone": 1.0, "t2m": 10.0}}
DEFAULT_EOS_FACTOR = {"project": {"tts": 1.0, "clone": 1.0, "t2m": 1.0}, "released": {"tts": 1.0, "clone": 1.0, "t2m": 0.6}}
PerCodebook = float | int | Sequence[float]


class PromptEncoder(Protocol):
    """Turns a request into its prompt (ending with the all-BOS frame); names the pad and audio ids."""

    pad_id: int
    audio_id: int

    def encode(self, request: Request, conditional: bool) -> Segment: ...


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
    decoding: str = "project"  # or "released" (see the module docstring)
    eos_logit_factor: float | None = None  # "released" only; None: DEFAULT_EOS_FACTOR for the task

    def __post_init__(self) -> None:
        for name in ("guidance_scale", "moe_top_p", "eos_logit_factor", "temperature", "top_k", "top_p"):
            value = getattr(self, name)
            values = [value] if value is None or isinstance(value, (int, float)) else list(value)  # or one per codebook
            if not all(v is None or math.isfinite(v) for v in values):
                raise UniMoEError(f"{name} must be a finite number (or one per codebook), got {value}")
        if self.decoding not in DECODINGS:
            raise UniMoEError(f"decoding must be one of {DECODINGS}, got {self.decoding!r}")
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


def released_sample(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, eos: int,
                    generator: torch.Generator | None) -> torch.Tensor:
    """The released sampler on float32 rows [N, V] -> [N]: the same operations in the same order,
    so one seeded call draws exactly what the released code draws. temperature 0 = arg-max."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    eos_col = logits[:, eos]
    logits[:, eos] = torch.where(logits.argmax(-1) != eos, torch.full_like(eos_col, -torch.inf), eos_col)
    if top_k > 0:
        keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, logits.topk(top_k, dim=-1).indices, True)
        logits = logits.masked_fill(~keep, -torch.inf)
    if top_p < 1.0:
        probs, order = logits.softmax(-1).sort(dim=-1, descending=True)
        drop = probs.cumsum(-1) > top_p  # drop what follows the first token that crosses top_p
        drop = torch.cat([torch.zeros_like(drop[:, :1]), drop[:, :-1]], dim=-1)
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), -torch.inf)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


class Generator:
    """Runs requests through a model: `run()` returns aligned codes, `steps()` yields progress."""

    def __init__(self, model: UniMoEAudioModel, prompts: PromptEncoder):
        self.model, self.prompts = model, prompts
        c = model.config
        self.pattern = DelayPattern(c.delays, c.codebook_size)

    def steps(self, requests: list[Request], config: GenerationConfig,
              cancelled: Collection[int] = ()) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yields (delayed frames so far [B, K, s], eos step per request [B], -1 = not yet) each step.

        `cancelled` holds indices of requests to stop and may grow while iterating (a set the caller
        fills): from the next step their rows leave the batch, KV cache included, and their entries
        in the yielded tensors mean nothing. Generation ends when every other request has ended.
        """
        if not requests:
            raise UniMoEError("nothing to generate: no requests")
        if config.moe_top_p is not None and not any(m.config.routing == "top_p" for m in self.model.moe_layers()):
            raise UniMoEError("moe_top_p sets the Top-P routers' threshold, but this model has none "
                              f"({'a dense model' if not self.model.moe_layers() else 'its MoE layers route Top-K'})")
        model, pattern = self.model, self.pattern
        device = next(model.parameters()).device
        k, c = pattern.num_codebooks, model.config
        scales = torch.tensor([r.guidance_scale if r.guidance_scale is not None else DEFAULT_GUIDANCE[config.decoding][r.task]
                               if config.guidance_scale is None else config.guidance_scale for r in requests],
                              device=device)
        eos_factor = torch.tensor([DEFAULT_EOS_FACTOR[config.decoding][r.task] if config.eos_logit_factor is None
                                   else config.eos_logit_factor for r in requests], device=device)
        max_frames = torch.tensor([config.max_frames if r.max_frames is None else r.max_frames for r in requests],
                                  device=device)
        min_frames = torch.tensor([config.min_frames if r.min_frames is None else r.min_frames for r in requests],
                                  device=device).minimum(max_frames)
        longest = int(max_frames.max())
        guided = bool((scales != 0).any())
        prompts = [self.prompts.encode(r, True) for r in requests]
        if guided:
            prompts += [self.prompts.encode(r, False) for r in requests]
        rows, b = len(prompts), len(requests)
        width = max(p.tokens.shape[0] for p in prompts)
        total = width + longest + 1 + pattern.max_delay
        reach = max([width] + [int(p.positions.max()) + 1 for p in prompts if p.positions is not None])
        if reach + longest + 1 + pattern.max_delay > c.max_positions:  # a video's time axis may reach past its tokens
            raise UniMoEError(f"prompt ({reach} positions) + {longest} frames exceeds the model's {c.max_positions} "
                              "positions; ask for a shorter duration or video")
        tokens = torch.full((rows, width), self.prompts.pad_id, dtype=torch.long)
        audio = torch.full((rows, k, width), pattern.pad, dtype=torch.long)
        is_audio = torch.zeros(rows, width, dtype=torch.bool)
        valid = torch.zeros(rows, width, dtype=torch.bool)
        for i, p in enumerate(prompts):  # left-padded so every row's next position is the same
            n = p.tokens.shape[0]
            tokens[i, width - n:], audio[i, :, width - n:], is_audio[i, width - n:] = p.tokens, p.audio, p.is_audio
            valid[i, width - n:] = True
        positions = (valid.long().cumsum(-1) - 1).clamp_min(0)
        positions, vision = self._video_inputs(prompts, positions)
        tokens, audio, is_audio, valid, positions = (t.to(device) for t in (tokens, audio, is_audio, valid, positions))
        vision = None if vision is None else (vision[0].to(device), vision[1].to(device))

        temperature, top_k, top_p = (config.per_codebook(n, k, device) for n in ("temperature", "top_k", "top_p"))
        if config.decoding == "released" and any(bool((t != t[0]).any()) for t in (temperature, top_k, top_p)):
            raise UniMoEError("released decoding takes one temperature, top-k and top-p for all codebooks")
        gen = torch.Generator(device=device)
        if config.seed is None:
            gen.seed()  # a fresh seed for this generator alone: the caller's global RNG stays as it was
        else:
            gen.manual_seed(config.seed)
        delays = torch.tensor(pattern.delays, device=device)
        eos_at = torch.full((b,), -1, dtype=torch.long, device=device)
        live = torch.arange(b, device=device)  # requests still in the batch; rows are [cond(live), uncond(live)]
        frames = torch.empty(b, k, 0, dtype=torch.long, device=device)
        cache = KVCache(c, rows, total, device, next(model.parameters()).dtype)
        cache.key_valid[:, :width] = valid
        causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
        mask = (causal[None] & valid[:, None, :]) | torch.eye(width, dtype=torch.bool, device=device)[None]

        model.set_top_p(config.moe_top_p)
        try:
            with torch.inference_mode():
                hidden, _, _ = model.hidden(tokens, audio, is_audio, positions, pad_mask=~valid, cache=cache,
                                            attn_mask=mask[:, None], vision=vision)
                cache.length = width
                # audio continues from the largest position so far (all of t, h, w alike: 1-D RoPE)
                next_pos = (positions if positions.dim() == 2 else positions.amax(0))[:, -1:] + 1
                for step in range(longest + 1 + pattern.max_delay):
                    stay = torch.tensor([i not in cancelled for i in live.tolist()], device=device)
                    if not stay.all():
                        live = live[stay]
                        if live.numel() == 0:
                            return
                        rows_stay = stay.repeat(2) if guided else stay
                        hidden, next_pos = hidden[rows_stay], next_pos[rows_stay]
                        cache.keep(rows_stay)
                    n = live.numel()
                    logits = model.logits(hidden[:, -1]).float()  # [rows, K, V]
                    if guided:
                        cond, uncond = logits[:n], logits[n:]
                        logits = cond + scales[live, None, None] * (cond - uncond)
                    ended = eos_at[live]  # the frame rules record codebook 0's EOS step here
                    lengths = min_frames[live], max_frames[live]
                    if config.decoding == "released":
                        chosen = self._released_frame(logits, step, ended, lengths, eos_factor[live], temperature, top_k,
                                                      top_p, gen)
                    else:
                        chosen = self._project_frame(logits, step, ended, lengths, temperature, top_k, top_p, gen)
                    eos_at[live] = ended
                    frame = torch.full((b, k), pattern.pad, dtype=torch.long, device=device)
                    frame[live] = chosen
                    frame = self._force(frame, step, eos_at, delays)
                    frames = torch.cat([frames, frame[..., None]], dim=-1)
                    yield frames, eos_at
                    ended = eos_at[live]
                    if bool((ended >= 0).all()) and step >= int(ended.max()) + pattern.max_delay:
                        return
                    feed = frame[live].repeat(2, 1) if guided else frame[live]
                    cache.key_valid[:, cache.length] = True
                    step_mask = cache.key_valid[:, None, None, :cache.length + 1]
                    rows = feed.shape[0]
                    hidden, _, _ = model.hidden(torch.full((rows, 1), self.prompts.audio_id, device=device),
                                                feed[..., None], torch.ones(rows, 1, dtype=torch.bool, device=device),
                                                next_pos, cache=cache, attn_mask=step_mask)
                    cache.length += 1
                    next_pos = next_pos + 1
        finally:
            model.set_top_p(None)

    @staticmethod
    def _video_inputs(prompts: list[Segment], positions: torch.Tensor) -> tuple[torch.Tensor, tuple | None]:
        """Left-padded 1-D positions [B, W] -> [3, B, W] with the prompts' own M-RoPE positions, and
        (where [B, W], features [N, D]) of their videos; unchanged (and None) without videos."""
        if all(p.positions is None for p in prompts):
            return positions, None
        width = positions.shape[1]
        positions = positions.expand(3, -1, -1).clone()
        where = torch.zeros(positions.shape[1:], dtype=torch.bool)
        features = []
        for i, p in enumerate(prompts):
            n = p.tokens.shape[0]
            if p.positions is not None:
                positions[:, i, width - n:] = p.positions
            if p.vision is not None:
                where[i, width - n:] = p.vision[0]
                features.append(p.vision[1])
        return positions, (where, torch.cat(features)) if features else None

    def _project_frame(self, logits, step, eos_at, lengths, temperature, top_k, top_p, gen) -> torch.Tensor:
        """One frame [B, K] by the project's rule; records codebook 0's EOS step in `eos_at`;
        `lengths` = (min_frames [B], max_frames [B])."""
        p = self.pattern
        min_frames, max_frames = lengths
        codes_only = logits.clone()
        codes_only[..., p.codebook_size:] = float("-inf")
        frame = sample(codes_only, temperature, top_k, top_p, gen)
        # codebook 0 may end the audio where EOS is its arg-max, from min_frames (and step 1) on
        wants_eos = (logits[:, 0].argmax(-1) == p.eos) & (step >= min_frames.clamp_min(1)) | (step >= max_frames)
        eos_at[(eos_at < 0) & wants_eos] = step
        return frame

    def _released_frame(self, logits, step, eos_at, lengths, eos_factor, temperature, top_k, top_p, gen) -> torch.Tensor:
        """One frame [B, K] by the released rule; records codebook 0's EOS step in `eos_at`;
        `lengths` = (min_frames [B], max_frames [B])."""
        p = self.pattern
        min_frames, max_frames = lengths
        b, k, _ = logits.shape
        logits = logits.clone()
        logits[:, :, p.eos + 1:] = -torch.inf  # PAD and BOS never
        logits[:, 1:, p.eos] = -torch.inf  # only codebook 0 may say EOS, and not before min_frames
        logits[:, 0, p.eos] = torch.where(step >= min_frames, logits[:, 0, p.eos], -torch.inf)
        logits[:, 0, p.eos] *= eos_factor
        frame = released_sample(logits.reshape(b * k, -1), float(temperature[0]), int(top_k[0]), float(top_p[0]), p.eos,
                                gen).view(b, k)
        wants_eos = (frame[:, 0] == p.eos) | (step >= max_frames)
        eos_at[(eos_at < 0) & wants_eos] = step
        return frame

    def _force(self, frame, step, eos_at, delays) -> torch.Tensor:
        """The delay pattern's BOS, EOS and PAD on a chosen frame [B, K]."""
        p = self.pattern
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
