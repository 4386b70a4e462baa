"""The released text side (REFERENCE.md §5, §10): the checkpoint's tokenizer and its exact prompts.

Every prompt is one hand-built ChatML turn followed by <|AUDIO_START|>:

    <|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nUSER<|im_end|>\n<|im_start|>assistant\n<|AUDIO_START|>

    t2m     USER = <|MUSIC_START|>caption<|MUSIC_END|>            unconditional row: caption "Low quality."
    v2m     USER = <|vision_start|> one <|video_pad|> per video token <|vision_end|> + the above,
                   in both rows (the released code gives the unconditional row the same video)
    speech  USER = <|SPEECH_PROMPT_START|>prompt transcript<|SPEECH_PROMPT_END|>
                   <|VOICE_PROMPT_START|> one <|AUDIO_PLACEHOLDER|> per voice-prompt frame <|VOICE_PROMPT_END|>
                   <|SPEECH_START|>target text<|SPEECH_END|>          unconditional row: empty target text

The voice prompt's frames are in the released delayed layout (`voice_prompt_layout`); each
placeholder position carries the sum of its frame's codebook embeddings. Generation then starts
from an all-BOS frame after <|AUDIO_START|>. Video tokens carry the vision tower's features and
3-D positions (`vision.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from unimoe_audio.codec.delay import DelayPattern
from unimoe_audio.errors import UniMoEError
from unimoe_audio.model.released.checkpoint import ReleasedSpec
from unimoe_audio.model.released.vision import VIDEO_FPS, VISION_TOKENS, PreparedVideo, ReleasedVision, mrope_positions
from unimoe_audio.model.sequence import Request, Segment

SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
TURN = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
AUDIO_START = "<|AUDIO_START|>"
UNCONDITIONAL_CAPTION = "Low quality."
SPECIAL_TOKENS = ("<|AUDIO_PLACEHOLDER|>", "<|AUDIO_START|>", "<|AUDIO_END|>", "<|SPEECH_START|>", "<|SPEECH_END|>",
                  "<|VOICE_PROMPT_START|>", "<|VOICE_PROMPT_END|>", "<|SPEECH_PROMPT_START|>",
                  "<|SPEECH_PROMPT_END|>", "<|MUSIC_START|>", "<|MUSIC_END|>")
PLACEHOLDER = SPECIAL_TOKENS[0]
TOKENIZER_FILES = ("tokenizer_config.json",)
TOKENIZER_VOCAB = (("tokenizer.json",), ("vocab.json", "merges.txt"))


def check_tokenizer_files(directory: str | Path) -> None:
    directory = Path(directory)
    for name in TOKENIZER_FILES:
        if not (directory / name).is_file():
            raise UniMoEError(f"tokenizer file {directory / name} is missing; copy the checkpoint's tokenizer files")
    if not any(all((directory / n).is_file() for n in group) for group in TOKENIZER_VOCAB):
        raise UniMoEError(f"tokenizer file {directory / 'tokenizer.json'} (or vocab.json + merges.txt) is missing")


def load_tokenizer(directory: str | Path, spec: ReleasedSpec):
    """The checkpoint's own tokenizer from the local folder (left padding, as released)."""
    from transformers import AutoTokenizer

    check_tokenizer_files(directory)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), padding_side="left", use_fast=False,
                                                  local_files_only=True)
    except (OSError, ValueError) as err:
        raise UniMoEError(f"cannot load the tokenizer in {directory}: {err}") from None
    for token in SPECIAL_TOKENS:
        ids = tokenizer(token, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise UniMoEError(f"the tokenizer in {directory} does not know the special token {token}")
    placeholder = tokenizer.convert_tokens_to_ids(PLACEHOLDER)
    if placeholder != spec.placeholder_id:
        raise UniMoEError(f"{PLACEHOLDER} is id {placeholder} in the tokenizer but {spec.placeholder_id} in config.json")
    return tokenizer


def voice_prompt_layout(codes: torch.Tensor, pattern: DelayPattern) -> torch.Tensor:
    """Aligned voice-prompt codes [K, T] -> the released layout [K, T + max_delay + 1]: one more
    leading BOS than the delay pattern's own layout (codebook k: delays[k] + 1 BOS, the codes, one
    EOS, PAD), cut to that length, so the most delayed codebook's EOS falls off the end."""
    delayed = pattern.apply(codes[None], eos=True)[0]  # [K, T + 1 + max_delay]
    bos = torch.full((delayed.shape[0], 1), pattern.bos, dtype=delayed.dtype)
    return torch.cat([bos, delayed[:, :-1]], dim=1)


class ReleasedPrompts:
    """`PromptEncoder` for released checkpoints: the exact released prompts as token ids + frames.
    `vision` gives the vision tower when a request holds a video (loaded on first use)."""

    def __init__(self, tokenizer, spec: ReleasedSpec, pattern: DelayPattern,
                 vision: Callable[[], ReleasedVision] | None = None):
        self.tokenizer, self.spec, self.pattern, self.vision = tokenizer, spec, pattern, vision
        self.pad_id = int(tokenizer.pad_token_id)
        self.audio_id = spec.placeholder_id
        self._last_video: tuple | None = None  # (frames, fps, prepared, features): both rows of a request share it

    def text(self, request: Request, conditional: bool, video_tokens: int = 0) -> tuple[str, torch.Tensor | None]:
        """The prompt string and the voice-prompt frames its placeholders hold ([K, n] or None)."""
        r = request
        if r.task in ("t2m", "v2m"):
            start, pad, end = VISION_TOKENS
            video = start + pad * video_tokens + end if video_tokens else ""
            return SYSTEM + TURN.format(f"{video}<|MUSIC_START|>{r.caption if conditional else UNCONDITIONAL_CAPTION}"
                                        "<|MUSIC_END|>") + AUDIO_START, None
        if r.prompt_codes is None:
            raise UniMoEError("the released model speaks only in a given voice: pass prompt_audio and prompt_text")
        frames = voice_prompt_layout(r.prompt_codes.long(), self.pattern)
        user = (f"<|SPEECH_PROMPT_START|>{r.prompt_text}<|SPEECH_PROMPT_END|><|VOICE_PROMPT_START|>"
                + PLACEHOLDER * frames.shape[1]
                + f"<|VOICE_PROMPT_END|><|SPEECH_START|>{r.text if conditional else ''}<|SPEECH_END|>")
        return SYSTEM + TURN.format(user) + AUDIO_START, frames

    def text_span(self, tokens: list[int]) -> tuple[int, int]:
        """Where the target text lies in a conditional speech prompt: <|SPEECH_START|> … <|SPEECH_END|>."""
        start = tokens.index(self.tokenizer.convert_tokens_to_ids("<|SPEECH_START|>"))
        return start + 1, tokens.index(self.tokenizer.convert_tokens_to_ids("<|SPEECH_END|>"), start)

    def video(self, request: Request) -> tuple[ReleasedVision, PreparedVideo, torch.Tensor]:
        """The request's video prepared and through the vision tower (reused for the request's second row)."""
        if self.vision is None:
            raise UniMoEError("these prompts were built without the checkpoint's vision tower: they take no video")
        vision, last, fps = self.vision(), self._last_video, request.video_fps or VIDEO_FPS
        if last is None or last[0] is not request.video or last[1] != fps:
            ids = [self.tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS]
            if tuple(ids) != self.spec.video_ids:
                raise UniMoEError(f"the tokenizer's video tokens {VISION_TOKENS} are ids {ids}, config.json says "
                                  f"{list(self.spec.video_ids)}")
            prepared = vision.prepare(request.video, fps)
            last = self._last_video = (request.video, fps, prepared, vision.features(prepared))
        return vision, last[2], last[3]

    def encode(self, request: Request, conditional: bool) -> Segment:
        video = self.video(request) if request.video is not None else None  # (vision, prepared, features)
        text, frames = self.text(request, conditional, video[2].shape[0] if video else 0)
        ids = torch.tensor(self.tokenizer(text, add_special_tokens=False).input_ids + [self.audio_id])
        is_audio = ids == self.audio_id
        start = torch.full((self.pattern.num_codebooks, 1), self.pattern.bos, dtype=torch.long)  # generation's BOS frame
        frames = start if frames is None else torch.cat([frames, start], dim=1)
        if int(is_audio.sum()) != frames.shape[1]:
            raise UniMoEError(f"the text contains the special token {PLACEHOLDER}; remove it")
        audio = torch.full((self.pattern.num_codebooks, ids.shape[0]), self.pattern.pad, dtype=torch.long)
        audio[:, is_audio] = frames
        if video is None:
            return Segment(ids, audio, is_audio)
        vision, prepared, features = video
        is_video = ids == self.spec.video_ids[1]
        if int(is_video.sum()) != features.shape[0] or int((ids == self.spec.video_ids[0]).sum()) != 1:
            raise UniMoEError(f"the caption contains one of the video tokens {VISION_TOKENS}; remove it")
        positions = mrope_positions(ids, self.spec.video_ids[1], [prepared], vision.pre.merge_size,
                                    vision.tokens_per_second)
        return Segment(ids, audio, is_audio, is_video=is_video, video_features=features, positions=positions)
