"""The sequence format: how a request becomes text tokens and audio frames (docs/model.md).

    tts    <bos> <tts> <lang> <spk:NAME> <text> phonemes </text>                      [BOS frame] frames…
    clone  <bos> <clone> <lang> <prompt> <text> prompt phonemes </text> prompt frames </prompt>
           <text> target phonemes </text>                                              [BOS frame] frames…
    t2m    <bos> <t2m> <caption> characters </caption>                                 [BOS frame] frames…
    v2m    <bos> <v2m> <video> v0 v1 … </video> <caption> characters </caption>        [BOS frame] frames…

Audio positions hold one codec frame each (the sum of its K codebook embeddings): the voice
prompt's frames as they come from the codec, the generated audio in the delay pattern's layout
starting from an all-BOS frame. Video positions (`<frame>` tokens) hold the vision encoder's
tokens, frame after frame (model/vision.py). The unconditional form used for classifier-free
guidance drops the target text (tts, clone), the caption (t2m) or the video and the caption
(v2m), and keeps everything else. Released checkpoints write their own prompts from the same
`Request` (model/released/prompts.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from unimoe_audio.codec.delay import DelayPattern
from unimoe_audio.data import LANGUAGES, TASK_GROUPS, TASKS, Example
from unimoe_audio.errors import UniMoEError
from unimoe_audio.model.frontend import TextFrontend
from unimoe_audio.model.transformer import IGNORE
from unimoe_audio.model.vision import VisionConfig
from unimoe_audio.video import check_rate


@dataclass
class Request:
    """One thing to generate (or, with `codes`, one training example)."""

    task: str  # tts | clone | t2m | v2m
    text: str = ""
    language: str | None = None
    speaker: str | None = None
    caption: str = ""
    prompt_text: str = ""
    prompt_codes: torch.Tensor | None = None  # [K, Tp] aligned codes of the voice prompt
    video: torch.Tensor | None = None  # uint8 [T, H, W, 3] RGB frames (v2m); numpy is converted
    video_fps: float | None = None  # the rate the frames were sampled at; None: the model's own (UniMoEAudio.video_format)
    guidance_scale: float | None = None  # overrides GenerationConfig.guidance_scale for this request
    max_frames: int | None = None  # override GenerationConfig's lengths for this request, so requests
    min_frames: int | None = None  # of different lengths (speech and music) share one batch

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise UniMoEError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.task == "tts" and not self.speaker:
            raise UniMoEError("text-to-speech needs a speaker (or use task 'clone' with a voice prompt)")
        if self.task == "clone" and (self.prompt_codes is None or not self.prompt_text):
            raise UniMoEError("voice cloning needs prompt audio and its transcript (prompt_text)")
        if self.task in ("tts", "clone") and self.language not in LANGUAGES:
            raise UniMoEError(f"speech needs a language, one of {LANGUAGES}; got {self.language!r}")
        if self.task in ("tts", "clone") and not self.text.strip():
            raise UniMoEError("the text to speak is empty")
        if (self.task == "v2m") != (self.video is not None):
            raise UniMoEError("video-to-music needs a video" if self.task == "v2m" else f"task {self.task} takes no video")
        if self.video is not None:
            self.video = check_frames(self.video)
        if self.video_fps is not None:
            check_rate(self.video_fps, "video_fps")
        if self.max_frames is not None and self.max_frames < 1 or self.min_frames is not None and self.min_frames < 0:
            raise UniMoEError(f"need max_frames >= 1 and min_frames >= 0, got {self.max_frames}, {self.min_frames}")

    @classmethod
    def from_example(cls, ex: Example) -> "Request":
        m = ex.meta
        return cls(task=m["task"], text=m.get("text") or "", language=m.get("language"), speaker=m.get("speaker"),
                   caption=m.get("caption") or "", prompt_text=m.get("prompt_text") or "", prompt_codes=ex.prompt_codes,
                   video=ex.video)


def check_frames(frames) -> torch.Tensor:
    """A video as frames [T, H, W, 3] uint8 (numpy or torch) -> a uint8 tensor, or UniMoEError."""
    if not isinstance(frames, torch.Tensor):
        try:
            frames = torch.from_numpy(frames)
        except TypeError:
            raise UniMoEError(f"a video must be frames [T, H, W, 3] uint8 (numpy or torch) or a path, got "
                              f"{type(frames).__name__}") from None
    if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[-1] != 3:
        raise UniMoEError(f"video frames must be uint8 [T, H, W, 3] (RGB), got {frames.dtype} {list(frames.shape)}")
    if 0 in frames.shape:
        raise UniMoEError(f"the video has no pixels: frames of shape {list(frames.shape)}")
    return frames


@dataclass
class Segment:
    """A prompt: text token ids [L] and audio codes [K, L] (PAD at text positions). With a video,
    `is_video` [L] marks its tokens' positions and one of two things fills them: `video`, frames
    [T, S, S, 3] for the model's vision encoder, or `video_features` [N, D] from a vision tower
    outside the model (released checkpoints, whose video prompts also take 3-D M-RoPE `positions`)."""

    tokens: torch.Tensor
    audio: torch.Tensor
    is_audio: torch.Tensor
    video: torch.Tensor | None = None
    is_video: torch.Tensor | None = None
    video_features: torch.Tensor | None = None
    positions: torch.Tensor | None = None  # [3, L] M-RoPE positions; None: 0, 1, … (1-D RoPE)


def encode_prompt(frontend: TextFrontend, pattern: DelayPattern, request: Request, conditional: bool = True,
                  vision: VisionConfig | None = None) -> Segment:
    """The prompt up to and including the all-BOS frame that starts generation (`vision`: the
    model's vision encoder, for v2m)."""
    r, f = request, frontend
    k = pattern.num_codebooks
    parts: list[tuple[list[int], torch.Tensor | None]] = []  # text ids, or ([], frames)
    video = None
    if r.task == "v2m":
        if vision is None or not f.video:
            raise UniMoEError("this model has no vision encoder, so it cannot take a video; use a model trained with "
                              "video-to-music items (task v2m)")
        if r.video.shape[1:] != (vision.size, vision.size, 3) or r.video_fps not in (None, vision.fps):
            raise UniMoEError(f"this model reads video as {vision.size}×{vision.size} RGB frames at {vision.fps:g} "
                              f"frames/s, got {list(r.video.shape[1:])} at {r.video_fps or vision.fps:g} (pass the path "
                              "and let the model read it, or use unimoe_audio.video.read_video with its fps and size)")
        video = r.video if conditional else None
        head = [f["<bos>"], f["<v2m>"], f["<video>"]]
        head += [f["<frame>"]] * (0 if video is None else len(video) * vision.tokens_per_frame)
        head += [f["</video>"], *f.caption(r.caption if conditional else "")]
        parts.append((head, None))
    elif r.task == "t2m":
        head = [f["<bos>"], f["<t2m>"], *f.caption(r.caption if conditional else "")]
        parts.append((head, None))
    else:
        head = [f["<bos>"], f[f"<{r.task}>"], f[f"<{r.language}>"]]
        if r.task == "tts":
            head.append(f.speaker(r.speaker, r.language))
        else:
            head += [f["<prompt>"], *f.speech_text(r.prompt_text, r.language)]
            if r.prompt_codes.dim() != 2 or r.prompt_codes.shape[0] != k:
                raise UniMoEError(f"prompt codes must be [{k}, T], got {list(r.prompt_codes.shape)}")
            parts.append((head, None))
            parts.append(([], r.prompt_codes.long()))
            head = [f["</prompt>"]]
        head += f.speech_text(r.text if conditional else "", r.language)
        parts.append((head, None))
    parts.append(([], torch.full((k, 1), pattern.bos, dtype=torch.long)))

    tokens, audio, is_audio = [], [], []
    for ids, frames in parts:
        if frames is None:
            tokens.append(torch.tensor(ids, dtype=torch.long))
            audio.append(torch.full((k, len(ids)), pattern.pad, dtype=torch.long))
            is_audio.append(torch.zeros(len(ids), dtype=torch.bool))
        else:
            n = frames.shape[1]
            tokens.append(torch.full((n,), f["<audio>"], dtype=torch.long))
            audio.append(frames)
            is_audio.append(torch.ones(n, dtype=torch.bool))
    tokens = torch.cat(tokens)
    return Segment(tokens, torch.cat(audio, dim=1), torch.cat(is_audio), video,
                   tokens == f["<frame>"] if video is not None else None)


@dataclass
class FrontendPrompts:
    """The project's prompts (`encode_prompt`) for generation."""

    frontend: TextFrontend
    pattern: DelayPattern
    vision: VisionConfig | None = None  # the model's vision encoder (v2m), if it has one

    @property
    def pad_id(self) -> int:
        return self.frontend["<pad>"]

    @property
    def audio_id(self) -> int:
        return self.frontend["<audio>"]

    def encode(self, request: Request, conditional: bool) -> Segment:
        return encode_prompt(self.frontend, self.pattern, request, conditional, self.vision)

    def text_span(self, tokens: list[int]) -> tuple[int, int]:
        """Where the target text lies in a conditional speech prompt: the last <text> … </text>."""
        start = len(tokens) - 1 - tokens[::-1].index(self.frontend["<text>"])
        return start + 1, tokens.index(self.frontend["</text>"], start)


class SequenceCollator:
    """Examples -> a right-padded training batch (see `UniMoEAudioModel.forward`).

    `prompts` writes each example's prompt exactly as generation will (`FrontendPrompts` for the
    project's models, `ReleasedPrompts` for the released checkpoint's ChatML prompts): it has
    `pattern`, `pad_id`, `audio_id`, `encode(request, conditional)` and `text_span(tokens)`.
    `max_music_frames` crops music to a random excerpt (speech is never cropped: its text must
    match its audio). Condition dropout replaces the text or caption with the unconditional form
    with probability `cond_dropout`; `audio_noise` replaces each code of the generated audio's
    input frames (never a target, never the voice prompt) by a random code with that probability.
    The caller passes the random generator so batches are reproducible (exact resume); without
    one (evaluation) neither is applied.
    """

    def __init__(self, prompts, cond_dropout: float = 0.0, max_music_frames: int | None = None,
                 audio_noise: float = 0.0):
        self.prompts, self.pattern = prompts, prompts.pattern
        self.cond_dropout, self.max_music_frames, self.audio_noise = cond_dropout, max_music_frames, audio_noise

    def excerpt(self, ex: Example, rng: np.random.Generator | None) -> Example:
        """A music example cut to `max_music_frames` (a random excerpt with `rng`, else the start); a
        v2m example's video is cut to the same moments: the excerpt starts on a video frame."""
        m, frames = self.max_music_frames, ex.codes.shape[1]
        if ex.meta["task"] not in ("t2m", "v2m") or not m or frames <= m:
            return ex
        if ex.video is None:
            start = int(rng.integers(frames - m + 1)) if rng is not None else 0
            return replace(ex, codes=ex.codes[:, start:start + m])
        step = ex.video_step
        first = int(rng.integers(int((frames - m) / step) + 1)) if rng is not None else 0  # video frame the excerpt starts on
        start = round(first * step)
        last = math.ceil((start + m) / step)  # video frames shown before the excerpt ends
        return replace(ex, codes=ex.codes[:, start:start + m], video=ex.video[first:max(last, first + 1)])

    def sequence(self, ex: Example, rng: np.random.Generator | None, conditional: bool = True
                 ) -> tuple[Segment, torch.Tensor, tuple, tuple]:
        """-> (segment, targets [K, L], target-text span, audio-query span) (spans (0, 0) if none).
        `conditional=False` writes the unconditional form whatever condition dropout draws."""
        ex = self.excerpt(ex, rng)
        codes = ex.codes
        conditional = (rng is None or rng.random() >= self.cond_dropout) and conditional
        prompt = self.prompts.encode(Request.from_example(ex), conditional)
        delayed = self.pattern.apply(codes[None], eos=True)[0]  # [K, T + 1 + max_delay]
        k, n_prompt = delayed.shape[0], prompt.tokens.shape[0]
        seg = Segment(
            tokens=torch.cat([prompt.tokens, torch.full((delayed.shape[1],), self.prompts.audio_id, dtype=torch.long)]),
            audio=torch.cat([prompt.audio, self.noised(delayed, rng)], dim=1),
            is_audio=torch.cat([prompt.is_audio, torch.ones(delayed.shape[1], dtype=torch.bool)]),
            video=prompt.video,
            is_video=None if prompt.video is None else torch.cat([prompt.is_video, torch.zeros(delayed.shape[1], dtype=torch.bool)]))
        # Position n_prompt - 1 (the BOS frame) predicts delayed frame 0, and so on; BOS and PAD
        # targets are forced at generation time, so they carry no loss.
        targets = torch.full((k, seg.tokens.shape[0]), IGNORE, dtype=torch.long)
        learn = delayed.clone()
        learn[(delayed == self.pattern.bos) | (delayed == self.pattern.pad)] = IGNORE
        targets[:, n_prompt - 1: n_prompt - 1 + delayed.shape[1]] = learn
        text_span = audio_span = (0, 0)
        if conditional and ex.meta["task"] in ("tts", "clone"):  # the target text is the last <text> … </text>
            text_span = self.prompts.text_span(prompt.tokens.tolist())
            audio_span = (n_prompt - 1, n_prompt - 1 + codes.shape[1])
        return seg, targets, text_span, audio_span

    def noised(self, delayed: torch.Tensor, rng: np.random.Generator | None) -> torch.Tensor:
        """delayed [K, S] with each code (not BOS/EOS/PAD) replaced by a random one with probability
        `audio_noise` (the targets are taken before this)."""
        if rng is None or not self.audio_noise:
            return delayed
        size = self.pattern.codebook_size
        hit = torch.from_numpy(rng.random(delayed.shape) < self.audio_noise) & (delayed < size)
        return torch.where(hit, torch.from_numpy(rng.integers(size, size=delayed.shape)), delayed)

    def __call__(self, examples: list[Example], rng: np.random.Generator | None = None, conditional: bool = True) -> dict:
        seqs = [self.sequence(ex, rng, conditional) for ex in examples]
        b, k = len(seqs), self.pattern.num_codebooks
        length = max(s[0].tokens.shape[0] for s in seqs)
        batch = {
            "tokens": torch.full((b, length), self.prompts.pad_id, dtype=torch.long),
            "audio": torch.full((b, k, length), self.pattern.pad, dtype=torch.long),
            "is_audio": torch.zeros(b, length, dtype=torch.bool),
            "targets": torch.full((b, k, length), IGNORE, dtype=torch.long),
            "pad_mask": torch.ones(b, length, dtype=torch.bool),
            "task_ids": torch.tensor([TASK_GROUPS.index(ex.meta["group"]) for ex in examples]),
            "text_span": torch.tensor([s[2] for s in seqs], dtype=torch.long).view(b, 2),
            "audio_span": torch.tensor([s[3] for s in seqs], dtype=torch.long).view(b, 2),
        }
        for i, (seg, tgt, _, _) in enumerate(seqs):
            n = seg.tokens.shape[0]
            batch["tokens"][i, :n] = seg.tokens
            batch["audio"][i, :, :n] = seg.audio
            batch["is_audio"][i, :n] = seg.is_audio
            batch["targets"][i, :, :n] = tgt
            batch["pad_mask"][i, :n] = False
        batch.update(video_batch([s[0] for s in seqs], length))
        return batch


def video_batch(segments: list[Segment], length: int, left: bool = False) -> dict:
    """The video keys of a batch of `segments` padded to `length` (left-padded with `left`):
    `is_video` [B, length] and what fills those positions, `video` uint8 [B, T_max, S, S, 3] with
    `video_frames` [B] (the model's vision encoder) or `video_features` [N, D]; {} when none has a
    video (a batch without video is what it was before video existed)."""
    shown = [s for s in segments if s.is_video is not None]
    if not shown:
        return {}
    out = {"is_video": torch.zeros(len(segments), length, dtype=torch.bool)}
    for i, s in enumerate(segments):
        if s.is_video is not None:
            n = s.tokens.shape[0]
            out["is_video"][i, slice(length - n, length) if left else slice(0, n)] = s.is_video
    if shown[0].video_features is not None:
        out["video_features"] = torch.cat([s.video_features for s in shown])  # row by row: the positions' order
        return out
    videos = [s.video for s in shown]
    out["video"] = torch.zeros((len(segments), max(len(v) for v in videos), *videos[0].shape[1:]), dtype=torch.uint8)
    out["video_frames"] = torch.zeros(len(segments), dtype=torch.long)
    for i, s in enumerate(segments):
        if s.video is not None:
            out["video"][i, :len(s.video)], out["video_frames"][i] = s.video, len(s.video)
    return out
