"""The codebook delay pattern (MusicGen-style; paper: [0, 8, 9, ..., 18] for 12 codebooks).

Codebook k is shifted right by `delays[k]` steps so that, when one step predicts all K
codebooks at once, codebook k at time t is predicted after the coarser codebooks of the same
frame. Token values (per codebook vocabulary C + 3): codes 0..C-1, EOS = C, PAD = C + 1,
BOS = C + 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unimoe_audio.errors import UniMoEError


@dataclass(frozen=True)
class DelayPattern:
    delays: tuple[int, ...]
    codebook_size: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "delays", tuple(int(d) for d in self.delays))
        if not self.delays or min(self.delays) < 0:
            raise UniMoEError(f"delays must be a non-empty list of non-negative steps, got {list(self.delays)}")
        if self.codebook_size <= 0:
            raise UniMoEError(f"codebook_size must be positive, got {self.codebook_size}")

    @classmethod
    def paper(cls, codebook_size: int = 1024) -> "DelayPattern":
        """12 codebooks: codebook 0 undelayed, codebook c >= 1 delayed by 7 + c."""
        return cls((0, *range(8, 19)), codebook_size)

    @classmethod
    def uniform(cls, num_codebooks: int, codebook_size: int = 1024) -> "DelayPattern":
        """Codebook k delayed by k steps."""
        return cls(tuple(range(num_codebooks)), codebook_size)

    @property
    def num_codebooks(self) -> int:
        return len(self.delays)

    @property
    def max_delay(self) -> int:
        return max(self.delays)

    @property
    def eos(self) -> int:
        return self.codebook_size

    @property
    def pad(self) -> int:
        return self.codebook_size + 1

    @property
    def bos(self) -> int:
        return self.codebook_size + 2

    @property
    def vocab_size(self) -> int:
        return self.codebook_size + 3

    def _check(self, codes: torch.Tensor, what: str, trailing: bool = False) -> None:
        if codes.dim() < 3 or not trailing and codes.dim() != 3 or codes.shape[1] != self.num_codebooks:
            raise UniMoEError(f"{what} must be [B, {self.num_codebooks}, T{', ...' if trailing else ''}], "
                              f"got {list(codes.shape)}")

    def apply(self, codes: torch.Tensor, eos: bool = False) -> torch.Tensor:
        """codes [B, K, T] -> delayed [B, K, T + eos + max_delay].

        Codebook k holds BOS for its first delays[k] steps, then its codes (then one EOS when
        `eos`), then PAD up to the common length.
        """
        self._check(codes, "codes")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise UniMoEError(f"codes must lie in [0, {self.codebook_size}); got values in "
                              f"[{int(codes.min())}, {int(codes.max())}]")
        b, k, t = codes.shape
        body = t + int(eos)
        out = codes.new_full((b, k, body + self.max_delay), self.pad)
        for cb, d in enumerate(self.delays):
            out[:, cb, :d] = self.bos
            out[:, cb, d : d + t] = codes[:, cb]
            if eos:
                out[:, cb, d + t] = self.eos
        return out

    def revert(self, delayed: torch.Tensor) -> torch.Tensor:
        """delayed [B, K, S, ...] -> aligned [B, K, S - max_delay, ...] (undoes `apply`, EOS column
        included; anything per step, such as a distribution over the codes, moves with its step)."""
        self._check(delayed, "delayed codes", trailing=True)
        s = delayed.shape[2]
        t = s - self.max_delay
        if t < 0:
            raise UniMoEError(f"delayed sequence of {s} steps is shorter than the largest delay {self.max_delay}")
        return torch.stack([delayed[:, cb, d : d + t] for cb, d in enumerate(self.delays)], dim=1)

    def lengths(self, aligned: torch.Tensor) -> torch.Tensor:
        """Frames before the first EOS/PAD in codebook 0 of aligned codes [B, K, T] -> [B]."""
        special = aligned[:, 0] >= self.codebook_size  # [B, T]
        t = aligned.shape[-1]
        first = torch.where(special.any(-1), special.float().argmax(-1), torch.full_like(special[:, 0], t, dtype=torch.long))
        return first.long()

    def to_dict(self) -> dict:
        return {"delays": list(self.delays), "codebook_size": self.codebook_size}
