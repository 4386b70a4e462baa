"""Scheduled sampling: train on some of the model's own predictions in place of the recorded frames.

Teacher forcing only ever shows the model recorded audio frames; generating, it reads back the
frames it chose, so its mistakes take it where it never trained and compound (exposure bias: the
English backbone says 0.24 of the words wrong when fed the recording's frames and 0.45 when
running free, docs/pretrained.md). With a stage's `self_feed: p`, a pass without gradients first
predicts every audio frame from the recorded context, greedily and among the codes only (what
generation at temperature 0 chooses). Each fed-back frame of the generated audio is then replaced
by that prediction with probability p, and the training pass learns the recorded codes from the
mixed input. The voice prompt, BOS/EOS/PAD frames and the text are never replaced.
"""

from __future__ import annotations

from typing import Callable

import torch

from unimoe_audio.model.transformer import IGNORE


@torch.no_grad()
def fed_own_predictions(forward: Callable, batch: dict, codebook_size: int, share: float,
                        generator: torch.Generator) -> dict:
    """`batch` with a `share` of its fed-back audio frames replaced by the model's greedy prediction
    of them: a new dict whose `audio` is a new tensor; the targets are unchanged. `forward` is the
    model as training calls it (DDP/FSDP wrapped or bare); `generator` draws which frames, on the
    batch's device."""
    if share <= 0:
        return batch
    targets = batch["targets"]  # [B, K, L]: position t predicts the audio fed at position t + 1
    predicted = targets.clone()
    logits = forward(**batch, return_logits=True).logits  # [N, K, V] where a target is
    predicted.permute(0, 2, 1)[(targets != IGNORE).any(1)] = logits[..., :codebook_size].argmax(-1)
    codes = (targets != IGNORE) & (targets < codebook_size)  # real codes, not EOS
    chosen = torch.rand(targets[:, 0].shape, generator=generator, device=targets.device) < share  # whole frames
    replace = (codes & chosen[:, None])[:, :, :-1]
    audio = batch["audio"].clone()
    audio[:, :, 1:] = torch.where(replace, predicted[:, :, :-1], audio[:, :, 1:])
    return {**batch, "audio": audio}
