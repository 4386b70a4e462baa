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

What comes out (`GenerationConfig.output`): "codes", the frames chosen, or "expected", the
model's distribution over each code at each step (softmax of the guided logits over the codes),
for codecs that decode the expectation (`Codec.decodes_expected`): the mean of what the model
predicts rather than one draw from it. The chosen codes are fed back either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Collection, Iterator, Protocol, Sequence

import torch

from unimoe_audio.codec.delay import DelayPattern
from unimoe_audio.errors import UniMoEError
from unimoe_audio.model.sequence import Request, Segment, video_batch
from unimoe_audio.model.transformer import KVCache, UniMoEAudioModel

DECODINGS = ("project", "released")
OUTPUTS = ("codes", "expected")
# per decoding rule and task: guidance scale and EOS logit factor (REFERENCE.md §5 for "released")
DEFAULT_GUIDANCE = {"project": {"tts": 1.0, "clone": 1.0, "t2m": 3.0, "v2m": 3.0},
                    "released": {"tts": 1.0, "clone": 1.0, "t2m": 10.0, "v2m": 10.0}}
DEFAULT_EOS_FACTOR = {"project": {"tts": 1.0, "clone": 1.0, "t2m": 1.0, "v2m": 1.0},
                      "released": {"tts": 1.0, "clone": 1.0, "t2m": 0.6, "v2m": 0.6}}
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
    output: str = "codes"  # or "expected" (see the module docstring)

    def __post_init__(self) -> None:
        for name in ("guidance_scale", "moe_top_p", "eos_logit_factor", "temperature", "top_k", "top_p"):
            value = getattr(self, name)
            values = [value] if value is None or isinstance(value, (int, float)) else list(value)  # or one per codebook
            if not all(v is None or math.isfinite(v) for v in values):
                raise UniMoEError(f"{name} must be a finite number (or one per codebook), got {value}")
        if self.decoding not in DECODINGS:
            raise UniMoEError(f"decoding must be one of {DECODINGS}, got {self.decoding!r}")
        if self.output not in OUTPUTS:
            raise UniMoEError(f"output must be one of {OUTPUTS}, got {self.output!r}")
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
    t = temperature.clamp_min(1e-5)[None, :, None]
    vocab = logits.shape[-1]
    k = torch.where(top_k > 0, top_k, torch.full_like(top_k, vocab)).long()
    # only the largest top-k candidates can be drawn: a partial sort of those is enough
    ordered, order = (logits / t).topk(min(int(k.max()), vocab), dim=-1)
    rank = torch.arange(ordered.shape[-1], device=logits.device)
    ordered = ordered.masked_fill(rank[None, None, :] >= k[None, :, None], float("-inf"))
    if bool((top_p < 1).any()):  # skipped when no codebook asks for it: this runs once per frame
        probs = ordered.softmax(-1)  # top-p then acts on the top-k distribution, as in transformers
        ordered = ordered.masked_fill((probs.cumsum(-1) - probs) >= top_p[None, :, None], float("-inf"))  # smallest prefix reaching top_p
    choice = torch.multinomial(ordered.softmax(-1).flatten(0, 1), 1, generator=generator).view(logits.shape[:2])
    sampled = order.gather(-1, choice[..., None])[..., 0]
    if bool((temperature == 0).any()):
        return torch.where(temperature[None, :] == 0, logits.argmax(-1), sampled)
    return sampled


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


def batch_positions(prompts: list[Segment], positions: torch.Tensor) -> torch.Tensor:
    """Left-padded 1-D positions [B, W] -> [3, B, W] holding the prompts' own M-RoPE positions
    (released checkpoints with a video); unchanged when no prompt has any."""
    if all(p.positions is None for p in prompts):
        return positions
    width = positions.shape[1]
    positions = positions.expand(3, -1, -1).clone()
    for i, p in enumerate(prompts):
        if p.positions is not None:
            positions[:, i, width - p.tokens.shape[0]:] = p.positions
    return positions


def guidance_of(request: Request, config: GenerationConfig) -> float:
    """The guidance scale a request decodes with: its own, else the config's, else the task default."""
    if request.guidance_scale is not None:
        return request.guidance_scale
    return DEFAULT_GUIDANCE[config.decoding][request.task] if config.guidance_scale is None else config.guidance_scale


class Decoding:
    """A batch being decoded: `step()` chooses one frame for every request in it; requests join
    (`join`, their prompts prefilled) and leave (`drop`) between steps.

    KV-cache rows are [conditional(requests), unconditional(requests)] when guided. Every row
    writes its next frame at the same cache index: prompts are left-padded (positions count only
    real tokens, so padding changes nothing), and a joining request's prompt, prefilled on its
    own, is placed so that it ends where the batch's keys end (the batch's keys are shifted right
    when the newcomer's prompt is longer); the keys no row attends to any more (those of requests
    that have left) are dropped then, so the cache does not grow with the batch's age. Each request
    keeps its own step count, so a request that joins late follows the delay pattern and its length
    limits from its own first frame.
    """

    def __init__(self, generator: "Generator", config: GenerationConfig, guided: bool):
        model, pattern = generator.model, generator.pattern
        if config.moe_top_p is not None and not any(m.config.routing == "top_p" for m in model.moe_layers()):
            raise UniMoEError("moe_top_p sets the Top-P routers' threshold, but this model has none "
                              f"({'a dense model' if not model.moe_layers() else 'its MoE layers route Top-K'})")
        self.generator, self.config, self.guided = generator, config, guided
        self.device = device = next(model.parameters()).device
        k = pattern.num_codebooks
        self.temperature, self.top_k, self.top_p = (config.per_codebook(n, k, device) for n in ("temperature", "top_k", "top_p"))
        if config.decoding == "released" and any(bool((t != t[0]).any()) for t in (self.temperature, self.top_k, self.top_p)):
            raise UniMoEError("released decoding takes one temperature, top-k and top-p for all codebooks")
        self.gen = torch.Generator(device=device)
        if config.seed is None:
            self.gen.seed()  # a fresh seed for this generator alone: the caller's global RNG stays as it was
        else:
            self.gen.manual_seed(config.seed)
        self.delays = torch.tensor(pattern.delays, device=device)
        self.ids: list[int] = []  # the requests in the batch, in row order
        long = dict(dtype=torch.long, device=device)
        self.scales = torch.empty(0, device=device)
        self.eos_factor = torch.empty(0, device=device)
        self.min_frames, self.max_frames = torch.empty(0, **long), torch.empty(0, **long)
        self.made = torch.empty(0, **long)  # frames chosen so far per request (its step)
        self.eos_at = torch.empty(0, **long)  # codebook 0's EOS step per request, -1 = not yet
        self.cache: KVCache | None = None
        self.hidden = self.next_pos = None  # last hidden state [rows, 1, D], next position [rows, 1]
        self.pending: torch.Tensor | None = None  # the frames [n, K] chosen last, not yet fed back
        self.probs: torch.Tensor | None = None  # output "expected": the last step's distributions [n, K, C]
        self._next_id = 0

    def __len__(self) -> int:
        return len(self.ids)

    def accepts(self, request: Request) -> bool:
        """Whether `request` can join: an unguided batch has no unconditional rows for a guided one."""
        return self.guided or guidance_of(request, self.config) == 0

    def join(self, requests: list[Request]) -> list[int]:
        """Prefill `requests` and add them to the batch; returns their ids."""
        if not requests:
            return []
        refused = [r.task for r in requests if not self.accepts(r)]
        if refused:
            raise UniMoEError(f"an unguided batch cannot take guided requests ({', '.join(refused)})")
        g, c, device = self.generator, self.config, self.device
        model, pattern = g.model, g.pattern
        max_frames = [c.max_frames if r.max_frames is None else r.max_frames for r in requests]
        prompts = [g.prompts.encode(r, True) for r in requests]
        if self.guided:
            prompts += [g.prompts.encode(r, False) for r in requests]
        for p, most in zip(prompts, max_frames * (2 if self.guided else 1)):
            reach = p.tokens.shape[0] if p.positions is None else int(p.positions.max()) + 1  # M-RoPE: time may reach further
            if reach + most + 1 + pattern.max_delay > model.config.max_positions:
                raise UniMoEError(f"prompt ({reach} positions) + {most} frames exceeds the model's "
                                  f"{model.config.max_positions} positions; ask for a shorter duration or video")
        self._feed()  # the batch's last frames go in first, so every row is at the same point
        rows, width, k = len(prompts), max(p.tokens.shape[0] for p in prompts), pattern.num_codebooks
        tokens = torch.full((rows, width), g.prompts.pad_id, dtype=torch.long)
        audio = torch.full((rows, k, width), pattern.pad, dtype=torch.long)
        is_audio = torch.zeros(rows, width, dtype=torch.bool)
        valid = torch.zeros(rows, width, dtype=torch.bool)
        for i, p in enumerate(prompts):  # left-padded so every row's next position is the same
            n = p.tokens.shape[0]
            tokens[i, width - n:], audio[i, :, width - n:], is_audio[i, width - n:] = p.tokens, p.audio, p.is_audio
            valid[i, width - n:] = True
        positions = batch_positions(prompts, (valid.long().cumsum(-1) - 1).clamp_min(0))
        tokens, audio, is_audio, valid, positions = (t.to(device) for t in (tokens, audio, is_audio, valid, positions))
        video = {k: v.to(device) for k, v in video_batch(prompts, width, left=True).items()}
        cache = KVCache(model.config, rows, width + max(max_frames) + 1 + pattern.max_delay, device,
                        next(model.parameters()).dtype)
        cache.key_valid[:, :width] = valid
        causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
        mask = (causal[None] & valid[:, None, :]) | torch.eye(width, dtype=torch.bool, device=device)[None]
        with self._inference():
            hidden, _, _ = model.hidden(tokens, audio, is_audio, positions, pad_mask=~valid, cache=cache,
                                        attn_mask=mask[:, None], **video)
        cache.length = width
        # audio continues from the largest position so far, on every M-RoPE axis alike (1-D RoPE)
        hidden, next_pos = hidden[:, -1:], (positions if positions.dim() == 2 else positions.amax(0))[:, -1:] + 1

        ids = list(range(self._next_id, self._next_id + len(requests)))
        self._next_id += len(requests)
        long = dict(dtype=torch.long, device=device)
        new = {
            "scales": torch.tensor([guidance_of(r, c) for r in requests], device=device),
            "eos_factor": torch.tensor([DEFAULT_EOS_FACTOR[c.decoding][r.task] if c.eos_logit_factor is None
                                        else c.eos_logit_factor for r in requests], device=device),
            "max_frames": torch.tensor(max_frames, **long),
            "min_frames": torch.tensor([c.min_frames if r.min_frames is None else r.min_frames for r in requests], **long),
            "made": torch.zeros(len(requests), **long), "eos_at": torch.full((len(requests),), -1, **long)}
        new["min_frames"] = new["min_frames"].minimum(new["max_frames"])
        for name, value in new.items():
            setattr(self, name, torch.cat([getattr(self, name), value]))
        if self.cache is None:
            self.cache, self.hidden, self.next_pos = cache, hidden, next_pos
        else:  # rows [cond(old), uncond(old)] + [cond(new), uncond(new)] -> [cond(old, new), uncond(old, new)]
            old, fresh = len(self.ids), len(requests)
            order = torch.arange(2 * (old + fresh) if self.guided else old + fresh, device=device)
            if self.guided:
                order = torch.cat([order[:old], order[2 * old: 2 * old + fresh], order[old: 2 * old],
                                   order[2 * old + fresh:]])
            self.cache = KVCache.joined(self.cache, cache, self._room()).select(order)
            self.hidden = torch.cat([self.hidden, hidden])[order]
            self.next_pos = torch.cat([self.next_pos, next_pos])[order]
        self.ids += ids
        return ids

    def drop(self, ids: Collection[int]) -> None:
        """Take requests out of the batch (finished, failed or cancelled), KV cache included."""
        if not ids:
            return
        stay = torch.tensor([i not in ids for i in self.ids], device=self.device)
        if bool(stay.all()):
            return
        self.ids = [i for i in self.ids if i not in ids]
        for name in ("scales", "eos_factor", "min_frames", "max_frames", "made", "eos_at"):
            setattr(self, name, getattr(self, name)[stay])
        if self.pending is not None:
            self.pending = self.pending[stay]
        if self.probs is not None:
            self.probs = self.probs[stay]
        rows = stay.repeat(2) if self.guided else stay
        self.hidden, self.next_pos = self.hidden[rows], self.next_pos[rows]
        self.cache = self.cache.select(rows)

    def finished(self) -> list[int]:
        """Requests whose every codebook has reached EOS (their audio is complete)."""
        done = (self.eos_at >= 0) & (self.made > self.eos_at + self.generator.pattern.max_delay)
        return [i for i, d in zip(self.ids, done.tolist()) if d]

    def step(self) -> dict[int, tuple[torch.Tensor, int]]:
        """One frame for every request: {id: (frame [K] in the delayed layout, EOS step or -1)}."""
        if not self.ids:
            raise UniMoEError("nothing to generate: no requests")
        g, c = self.generator, self.config
        self._feed()
        n = len(self.ids)
        with self._inference():
            logits = g.model.logits(self.hidden[:, -1]).float()  # [rows, K, V]
        if self.guided:
            cond, uncond = logits[:n], logits[n:]
            logits = cond + self.scales[:, None, None] * (cond - uncond)
        if c.output == "expected":
            self.probs = logits[..., :g.pattern.codebook_size].softmax(-1)
        lengths = self.min_frames, self.max_frames
        if c.decoding == "released":
            chosen = self._released_frame(logits, self.made, self.eos_at, lengths, self.eos_factor, self.temperature,
                                          self.top_k, self.top_p, self.gen)
        else:
            chosen = self._project_frame(logits, self.made, self.eos_at, lengths, self.temperature, self.top_k,
                                         self.top_p, self.gen)
        self.pending = frame = self._force(chosen, self.made, self.eos_at, self.delays)
        self.made = self.made + 1
        return {i: (frame[j], int(e)) for j, (i, e) in enumerate(zip(self.ids, self.eos_at.tolist()))}

    def _project_frame(self, logits, step, eos_at, lengths, temperature, top_k, top_p, gen) -> torch.Tensor:
        """One frame [B, K] by the project's rule; records codebook 0's EOS step in `eos_at`;
        `lengths` = (min_frames [B], max_frames [B])."""
        p = self.generator.pattern
        min_frames, max_frames = lengths
        frame = sample(logits[..., :p.codebook_size], temperature, top_k, top_p, gen)  # codes only: no special token
        # codebook 0 may end the audio where EOS is its arg-max, from min_frames (and step 1) on
        wants_eos = (logits[:, 0].argmax(-1) == p.eos) & (step >= min_frames.clamp_min(1)) | (step >= max_frames)
        eos_at[:] = torch.where((eos_at < 0) & wants_eos, step, eos_at)
        return frame

    def _released_frame(self, logits, step, eos_at, lengths, eos_factor, temperature, top_k, top_p, gen) -> torch.Tensor:
        """One frame [B, K] by the released rule; records codebook 0's EOS step in `eos_at`;
        `lengths` = (min_frames [B], max_frames [B])."""
        p = self.generator.pattern
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
        eos_at[:] = torch.where((eos_at < 0) & wants_eos, step, eos_at)
        return frame

    def _force(self, frame, step, eos_at, delays) -> torch.Tensor:
        """The delay pattern's BOS, EOS and PAD on a chosen frame [B, K]."""
        p = self.generator.pattern
        ended = eos_at >= 0
        step = step[:, None]  # [B, 1] each request's own step
        offset = step - eos_at[:, None]  # [B, 1] steps since codebook 0's EOS
        frame = torch.where(ended[:, None] & (offset == delays[None]), torch.full_like(frame, p.eos), frame)
        frame = torch.where(ended[:, None] & (offset > delays[None]), torch.full_like(frame, p.pad), frame)
        frame = torch.where(step < delays[None], torch.full_like(frame, p.bos), frame)
        return frame

    def _feed(self) -> None:
        """Run the frames chosen last through the model (one cached position per row)."""
        pending, self.pending = self.pending, None
        if pending is None or not len(pending):  # nothing chosen yet, or every request has left
            return
        g, cache, device = self.generator, self.cache, self.device
        feed = pending.repeat(2, 1) if self.guided else pending
        if cache.length + 1 > cache.max_len:
            self.cache = cache = KVCache.joined(cache, None, self._room())
        cache.key_valid[:, cache.length] = True
        rows = feed.shape[0]
        with self._inference():
            self.hidden, _, _ = g.model.hidden(torch.full((rows, 1), g.prompts.audio_id, device=device), feed[..., None],
                                               torch.ones(rows, 1, dtype=torch.bool, device=device), self.next_pos,
                                               cache=cache, attn_mask=cache.key_valid[:, None, None, :cache.length + 1])
        cache.length += 1
        self.next_pos = self.next_pos + 1

    def _room(self) -> int:
        """Cache positions the batch's longest remaining request still needs."""
        left = self.max_frames + 1 + self.generator.pattern.max_delay - self.made
        return max(1, int(left.max()) if left.numel() else 1)

    def _inference(self):
        return _top_p_override(self.generator.model, self.config.moe_top_p)


class _top_p_override:
    """Inference mode with the DCMoE's Top-P threshold overridden (restored on exit); with no
    override the layers are left as they are (this runs twice per generated frame)."""

    def __init__(self, model: UniMoEAudioModel, top_p: float | None):
        self.model, self.top_p, self.mode = model, top_p, torch.inference_mode()

    def __enter__(self):
        self.mode.__enter__()
        if self.top_p is not None:
            self.model.set_top_p(self.top_p)

    def __exit__(self, *exc):
        if self.top_p is not None:
            self.model.set_top_p(None)
        return self.mode.__exit__(*exc)


class Generator:
    """Runs requests through a model: `run()` returns aligned codes, `steps()` yields progress,
    `decoding()` opens a batch that requests may join and leave between steps (the server's)."""

    def __init__(self, model: UniMoEAudioModel, prompts: PromptEncoder):
        self.model, self.prompts = model, prompts
        c = model.config
        self.pattern = DelayPattern(c.delays, c.codebook_size)

    def decoding(self, requests: list[Request], config: GenerationConfig, guided: bool | None = None) -> Decoding:
        """A `Decoding` holding `requests` (prefilled together). `guided` None: guided when any of
        them uses guidance; pass True to let guided requests join later."""
        if not requests:
            raise UniMoEError("nothing to generate: no requests")
        guided = guided if guided is not None else any(guidance_of(r, config) != 0 for r in requests)
        batch = Decoding(self, config, guided)
        batch.join(requests)
        return batch

    def steps(self, requests: list[Request], config: GenerationConfig,
              cancelled: Collection[int] = ()) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[torch.Tensor] | None]]:
        """Yields (delayed frames so far [B, K, s], eos step per request [B], -1 = not yet, for
        output "expected" the distributions so far, one [B, K, C] per step, else None) each step
        (a list, so that keeping each step's distributions costs no copy of the earlier ones).

        `cancelled` holds indices of requests to stop and may grow while iterating (a set the caller
        fills): from the next step their rows leave the batch, KV cache included, and their entries
        in the yielded tensors mean nothing. Generation ends when every other request has ended.
        """
        batch = self.decoding(requests, config)
        k, b, c = self.pattern.num_codebooks, len(requests), self.pattern.codebook_size
        frames = torch.empty(b, k, 0, dtype=torch.long, device=batch.device)
        eos_at = torch.full((b,), -1, dtype=torch.long, device=batch.device)
        probs = [] if config.output == "expected" else None
        while True:
            batch.drop(set(cancelled))
            if not batch.ids:
                return
            chosen = batch.step()
            frame = torch.full((b, k), self.pattern.pad, dtype=torch.long, device=batch.device)
            for i, (codes, eos) in chosen.items():
                frame[i], eos_at[i] = codes, eos
            frames = torch.cat([frames, frame[..., None]], dim=-1)
            if probs is not None:
                step = torch.zeros(b, k, c, device=batch.device)
                step[list(chosen)] = batch.probs
                probs.append(step)
            yield frames, eos_at, probs
            if len(batch.finished()) == len(batch):
                return

    def run(self, requests: list[Request], config: GenerationConfig, progress=None) -> list[torch.Tensor]:
        """Per request, aligned codes [K, T_i] (output "codes") or distributions [K, T_i, C]
        (output "expected"): what `UniMoEAudio.decode_all` decodes."""
        frames = eos_at = probs = None
        for frames, eos_at, probs in self.steps(requests, config):
            if progress is not None:
                progress.update(1)
        out = frames if probs is None else torch.stack(probs, dim=2)  # [B, K, s(, C)]
        aligned = self.pattern.revert(out[:, :, : int(eos_at.max()) + 1 + self.pattern.max_delay])
        return [aligned[i, :, : int(eos_at[i])].cpu() for i in range(len(requests))]
