"""The released text side (REFERENCE.md §5, §10): the checkpoint's tokenizer and its exact prompts.

Every prompt is one hand-built ChatML turn followed by <|AUDIO_START|>:

    <|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nUSER<|im_end|>\n<|im_start|>assistant\n<|AUDIO_START|>

    music   USER = <|MUSIC_START|>caption<|MUSIC_END|>            unconditional row: caption "Low quality."
    speech  USER = <|SPEECH_PROMPT_START|>prompt transcript<|SPEECH_PROMPT_END|>
                   <|VOICE_PROMPT_START|> one <|AUDIO_PLACEHOLDER|> per voice-prompt frame <|VOICE_PROMPT_END|>
                   <|SPEECH_START|>target text<|SPEECH_END|>          unconditional row: empty target text

The voice prompt's frames are in the released delayed layout (`voice_prompt_layout`); each
placeholder position carries the sum of its frame's codebook embeddings. Generation then starts
from an all-BOS frame after <|AUDIO_START|>.
"""

from __future__ import annotations

from pathlib import Path

import torch

from unimoe_audio.codec.delay import DelayPattern
from unimoe_audio.errors import UniMoEError
from unimoe_audio.model.released.checkpoint import ReleasedSpec
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
    """`PromptEncoder` for released checkpoints: the exact released prompts as token ids + frames."""

    def __init__(self, tokenizer, spec: ReleasedSpec, pattern: DelayPattern):
        self.tokenizer, self.spec, self.pattern = tokenizer, spec, pattern
        self.pad_id = int(tokenizer.pad_token_id)
        self.audio_id = spec.placeholder_id

    def text(self, request: Request, conditional: bool) -> tuple[str, torch.Tensor | None]:
        """The prompt string and the voice-prompt frames its placeholders hold ([K, n] or None)."""
        r = request
        if r.task == "t2m":
            return SYSTEM + TURN.format(f"<|MUSIC_START|>{r.caption if conditional else UNCONDITIONAL_CAPTION}"
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

    def encode(self, request: Request, conditional: bool) -> Segment:
        text, frames = self.text(request, conditional)
        ids = torch.tensor(self.tokenizer(text, add_special_tokens=False).input_ids + [self.audio_id])
        is_audio = ids == self.audio_id
        start = torch.full((self.pattern.num_codebooks, 1), self.pattern.bos, dtype=torch.long)  # generation's BOS frame
        frames = start if frames is None else torch.cat([frames, start], dim=1)
        if int(is_audio.sum()) != frames.shape[1]:
            raise UniMoEError(f"the text contains the special token {PLACEHOLDER}; remove it")
        audio = torch.full((self.pattern.num_codebooks, ids.shape[0]), self.pattern.pad, dtype=torch.long)
        audio[:, is_audio] = frames
        return Segment(ids, audio, is_audio)
