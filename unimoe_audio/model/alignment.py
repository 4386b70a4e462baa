"""Audio-to-text alignment: how the speech frames attend to the text they speak.

An autoregressive TTS model speaks only once its attention from audio frames to the target
text becomes a monotonic path. `diagonal_mass` measures that: for each audio frame t of T, the
attention mass on text positions n of N weighted by the diagonal prior
G[t, n] = exp(-(n/N - t/T)² / 2σ²) (DC-TTS's guided attention, Tachibana et al. 2018), averaged
over frames. It is near 1 for a diagonal path and small for attention spread anywhere else; the
guided-attention loss is 1 minus it, on a few heads of one layer, and it is what the trainer logs
on validation items as `align/<group>` and draws as attention maps.

Spans come from the collator: `text_span [B, 2]` (the target phonemes) and `audio_span [B, 2]`
(the query positions that predict the target frames); (0, 0) marks an item without one (music,
or speech trained in its unconditional form).
"""

from __future__ import annotations

import torch


def diagonal_prior(frames: int, symbols: int, sigma: float, device=None) -> torch.Tensor:
    """G [frames, symbols]: 1 on the diagonal, falling off with normalised distance σ."""
    t = (torch.arange(frames, device=device, dtype=torch.float32) + 0.5) / frames
    n = (torch.arange(symbols, device=device, dtype=torch.float32) + 0.5) / symbols
    return torch.exp(-(n[None, :] - t[:, None]).square() / (2 * sigma ** 2))


def alignment(attention: torch.Tensor, text_span: torch.Tensor, audio_span: torch.Tensor, item: int) -> torch.Tensor:
    """The attention of item `item` from its audio frames to its text: [H, T, N] (attention [B, H, L, L])."""
    (t0, t1), (a0, a1) = text_span[item].tolist(), audio_span[item].tolist()
    return attention[item, :, a0:a1, t0:t1]


def diagonal_mass(attention: torch.Tensor, text_span: torch.Tensor, audio_span: torch.Tensor,
                  sigma: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Per item and head the mean diagonal-prior mass [B, H] (0 where an item has no span), and
    which items have a span [B] bool."""
    b, h = attention.shape[:2]
    mass = attention.new_zeros(b, h)
    has = (text_span[:, 1] > text_span[:, 0]) & (audio_span[:, 1] > audio_span[:, 0])
    for i in torch.nonzero(has).flatten().tolist():
        a = alignment(attention, text_span, audio_span, i)  # [H, T, N]
        prior = diagonal_prior(a.shape[1], a.shape[2], sigma, a.device)
        mass[i] = (a * prior).sum(-1).mean(-1)
    return mass, has


def guided_attention_loss(attention: torch.Tensor, text_span: torch.Tensor, audio_span: torch.Tensor,
                          heads: int, sigma: float = 0.2) -> torch.Tensor:
    """1 - the diagonal mass of the first `heads` heads, averaged over items with a span (0 if none)."""
    mass, has = diagonal_mass(attention[:, :heads], text_span, audio_span, sigma)
    if not bool(has.any()):
        return attention.new_zeros(())
    return 1 - mass[has].mean()
