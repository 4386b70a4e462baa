"""Teacher-forced speech: what a model says when it is fed the recording's own past.

A free-running WER mixes two failures: a model that does not know how an unseen sentence sounds,
and a model that drifts once it is fed its own output. Teacher forcing separates them. Every code
is the model's arg-max at its position in the training sequence, so each step sees the recording's
true past frames, never the model's; the codes are decoded and judged like generated speech. On
validation sentences it says whether the model generalises; on training sentences, beside a free
run of the same sentences, what the drift costs (docs/pretrained.md, session 9: 0.36 on training
sentences, 1.36 on validation ones, and 1.36 for a free run of the same training sentences).
"""

from __future__ import annotations

import torch

from unimoe_audio.data import Example, TokenDataset
from unimoe_audio.errors import UniMoEError
from unimoe_audio.eval.judges import WhisperJudge
from unimoe_audio.eval.text import char_error_rate, word_error_rate
from unimoe_audio.model import SequenceCollator, UniMoEAudio

RATES = {"en": ("wer_whisper", word_error_rate), "zh": ("cer_whisper", char_error_rate)}


@torch.no_grad()
def teacher_forced_codes(api: UniMoEAudio, example: Example) -> torch.Tensor:
    """Aligned codes [K, T] of one example (T = its recording's frames): at each position, the
    arg-max code given the text and the recording's frames before it."""
    pattern = api.generator.pattern
    batch = SequenceCollator(api.generator.prompts)([example])
    device = next(api.model.parameters()).device
    hidden, _, _ = api.model.hidden(batch["tokens"].to(device), batch["audio"].to(device), batch["is_audio"].to(device),
                                    pad_mask=batch["pad_mask"].to(device))
    delayed = pattern.apply(example.codes[None], eos=True)[0]  # [K, S], the sequence's last S positions
    steps = delayed.shape[1]
    # Position L - S - 1 (the BOS frame) predicts delayed frame 0, and so on (SequenceCollator.sequence).
    logits = api.model.logits(hidden[0, -steps - 1:-1]).float()  # [S, K, V]
    best = logits[..., :pattern.codebook_size].argmax(-1).T.cpu()  # [K, S] codes only, never a special token
    guessed = torch.where(delayed < pattern.codebook_size, best, delayed)  # the pattern's BOS/EOS/PAD kept
    return pattern.revert(guessed[None])[0, :, :example.codes.shape[1]]


def teacher_forced_scores(api: UniMoEAudio, dataset: TokenDataset, per_group: int, groups: tuple[str, ...] | None = None,
                          whisper: WhisperJudge | None = None) -> dict:
    """Whisper-base WER (English) / CER (Mandarin) of the teacher-forced speech of the first
    `per_group` text-to-speech items of each speech group in `dataset` (of `groups`, when given),
    which must have been encoded with the model's codec:
    {"speech-en": {"items": n, "wer_whisper": rate}, "speech-zh": {"items": n, "cer_whisper": rate}}."""
    if per_group < 1:
        raise UniMoEError(f"per_group must be at least 1, got {per_group}")
    if dataset.info.get("codec_sha256") != api.codec.fingerprint():
        raise UniMoEError("these tokens were made by another codec than the model's; teacher forcing needs the "
                          "model's own codes (encode the corpus with the codec in the model's folder)")
    whisper = whisper or WhisperJudge()
    out = {}
    for language, (name, rate) in RATES.items():
        group = f"speech-{language}"
        if groups is not None and group not in groups:
            continue
        chosen = [i for i, g in enumerate(dataset.groups) if g == group and dataset.index[i]["task"] == "tts"][:per_group]
        if not chosen:
            continue
        refs, hyps = [], []
        for i in chosen:
            example = dataset[i]
            wave = api.decode(teacher_forced_codes(api, example))
            refs.append(example.meta["text"])
            hyps.append(whisper.transcribe(wave, api.sample_rate, language))
        out[group] = {"items": len(chosen), name: rate(refs, hyps),
                      "examples": [{"text": r, "teacher_forced": h} for r, h in list(zip(refs, hyps))[:3]]}
    return out
