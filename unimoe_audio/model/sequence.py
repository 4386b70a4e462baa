"""The sequence format: how a request becomes text tokens and audio frames (docs/model.md).

    tts    <bos> <tts> <lang> <spk:NAME> <text> phonemes </text>                      [BOS frame] frames…
    clone  <bos> <clone> <lang> <prompt> <text> prompt phonemes </text> prompt frames </prompt>
           <text> target phonemes </text>                                              [BOS frame] frames…
    t2m    <bos> <t2m> <caption> characters </caption>                                 [BOS frame] frames…

Audio positions hold one codec frame each (the sum of its K codebook embeddings): the voice
prompt's frames as they come from the codec, the generated audio in the delay pattern's layout
starting from an all-BOS frame. The unconditional form used for classifier-free guidance drops
the target text (tts, clone) or the caption (t2m) and keeps everything else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from unimoe_audio.codec.delay import DelayPattern
from unimoe_audio.data import LANGUAGES, TASK_GROUPS, TASKS, Example
from unimoe_audio.errors import UniMoEError
from unimoe_audio.model.frontend import TextFrontend
from unimoe_audio.model.transformer import IGNORE


@dataclass
class Request:
    """One thing to generate (or, with `codes`, one training example)."""

    task: str  # tts | clone | t2m
    text: str = ""
    language: str | None = None
    speaker: str | None = None
    caption: str = ""
    prompt_text: str = ""
    prompt_codes: torch.Tensor | None = None  # [K, Tp] aligned codes of the voice prompt
    video: torch.Tensor | None = None  # [T, H, W, 3] uint8 frames conditioning music (released checkpoints)
    video_fps: float = 1.0  # the rate the frames were sampled at
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
        if self.video is not None and self.task != "t2m":
            raise UniMoEError(f"a video conditions music only, not task {self.task!r}")
        if self.max_frames is not None and self.max_frames < 1 or self.min_frames is not None and self.min_frames < 0:
            raise UniMoEError(f"need max_frames >= 1 and min_frames >= 0, got {self.max_frames}, {self.min_frames}")

    @classmethod
    def from_example(cls, ex: Example) -> "Request":
        m = ex.meta
        return cls(task=m["task"], text=m.get("text") or "", language=m.get("language"), speaker=m.get("speaker"),
                   caption=m.get("caption") or "", prompt_text=m.get("prompt_text") or "", prompt_codes=ex.prompt_codes)


@dataclass
class Segment:
    """A prompt: text token ids [L] and audio codes [K, L] (PAD at text positions); with a video
    (released checkpoints), its features and 3-D positions."""

    tokens: torch.Tensor
    audio: torch.Tensor
    is_audio: torch.Tensor
    positions: torch.Tensor | None = None  # [3, L] M-RoPE positions; None: 0, 1, … (1-D RoPE)
    vision: tuple[torch.Tensor, torch.Tensor] | None = None  # (where [L] bool, features [N, D])


def encode_prompt(frontend: TextFrontend, pattern: DelayPattern, request: Request, conditional: bool = True) -> Segment:
    """The prompt up to and including the all-BOS frame that starts generation."""
    r, f = request, frontend
    if r.video is not None:
        raise UniMoEError("this model takes no video: only released checkpoints (with their vision tower) do")
    k = pattern.num_codebooks
    parts: list[tuple[list[int], torch.Tensor | None]] = []  # text ids, or (None-text, frames)
    head = [f["<bos>"], f[f"<{r.task}>"]]
    if r.task == "t2m":
        head += f.caption(r.caption if conditional else "")
        parts.append((head, None))
    else:
        head.append(f[f"<{r.language}>"])
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
    return Segment(torch.cat(tokens), torch.cat(audio, dim=1), torch.cat(is_audio))


@dataclass
class FrontendPrompts:
    """The project's prompts (`encode_prompt`) for generation."""

    frontend: TextFrontend
    pattern: DelayPattern

    @property
    def pad_id(self) -> int:
        return self.frontend["<pad>"]

    @property
    def audio_id(self) -> int:
        return self.frontend["<audio>"]

    def encode(self, request: Request, conditional: bool) -> Segment:
        return encode_prompt(self.frontend, self.pattern, request, conditional)

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
    with probability `cond_dropout`; the caller passes the random generator so batches are
    reproducible (exact resume).
    """

    def __init__(self, prompts, cond_dropout: float = 0.0, max_music_frames: int | None = None):
        self.prompts, self.pattern = prompts, prompts.pattern
        self.cond_dropout, self.max_music_frames = cond_dropout, max_music_frames

    def sequence(self, ex: Example, rng: np.random.Generator | None) -> tuple[Segment, torch.Tensor, tuple, tuple]:
        """-> (segment, targets [K, L], target-text span, audio-query span) (spans (0, 0) if none)."""
        codes = ex.codes
        if ex.meta["task"] == "t2m" and self.max_music_frames and codes.shape[1] > self.max_music_frames:
            start = int(rng.integers(codes.shape[1] - self.max_music_frames + 1)) if rng is not None else 0
            codes = codes[:, start:start + self.max_music_frames]
        conditional = rng is None or rng.random() >= self.cond_dropout
        prompt = self.prompts.encode(Request.from_example(ex), conditional)
        delayed = self.pattern.apply(codes[None], eos=True)[0]  # [K, T + 1 + max_delay]
        k, n_prompt = delayed.shape[0], prompt.tokens.shape[0]
        seg = Segment(
            tokens=torch.cat([prompt.tokens, torch.full((delayed.shape[1],), self.prompts.audio_id, dtype=torch.long)]),
            audio=torch.cat([prompt.audio, delayed], dim=1),
            is_audio=torch.cat([prompt.is_audio, torch.ones(delayed.shape[1], dtype=torch.bool)]))
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

    def __call__(self, examples: list[Example], rng: np.random.Generator | None = None) -> dict:
        seqs = [self.sequence(ex, rng) for ex in examples]
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
        return batch
