"""The project's vision encoder: video frames -> tokens the transformer reads before the caption.

    frames uint8 [B, T, S, S, 3] (T frames at `fps`, the centre square at S × S pixels)
      -> per frame: RGB and its difference from the previous frame (6 channels)
      -> Conv 4×4 stride 4, GELU, Conv 2×2 stride 2, GELU (S/8 × S/8 cells of `channels`)
      -> average-pooled to grid × grid cells -> Linear to the model width, + a learned slot embedding
      -> + the frame's time: sin/cos of t seconds at periods 0.25 … 32 s, through a Linear
      -> tokens [B, T · grid², D]

Why this shape. What a video tells the music here is global and temporal: the key in the colours,
the tempo and beat phase in what pulses, phrase cuts in what jumps; the notes' fine layout
matters less. A two-layer strided convolution sees colour and coarse shapes at negligible cost;
the frame difference hands the model motion (a swelling shape, a cut) without asking attention
to subtract neighbouring tokens; one token per frame (grid 1) keeps a 10 s video at 8 frames/s to
80 positions, so video + caption + music fit the small models' 1024 positions. The transformer's
1-D RoPE orders the tokens; the added time embedding says when each frame is, in seconds, which
the music's frames (50 per second) must line up with whatever the caption's length. A pretrained
image encoder would know more about natural images but none ships inside a package here, and
nothing in the rendered corpus needs one. Trained from scratch with the rest of the model (the
v2m specialist, then the curriculum).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unimoe_audio.data.tokens import VIDEO_FPS, VIDEO_SIZE
from unimoe_audio.errors import UniMoEError

TIME_PERIODS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)  # seconds


@dataclass
class VisionConfig:
    fps: float = VIDEO_FPS  # frames per second the encoder reads (the corpus caches videos so: data/tokens.py)
    size: int = VIDEO_SIZE  # frame side in pixels (a multiple of 8)
    channels: int = 32
    grid: int = 1  # tokens per frame = grid²
    max_seconds: float = 30.0  # longest video a request may bring

    def __post_init__(self) -> None:
        if not (math.isfinite(self.fps) and 0 < self.fps <= 60):
            raise UniMoEError(f"invalid VisionConfig: fps must be in (0, 60], got {self.fps}")
        if self.size < 8 or self.size % 8:
            raise UniMoEError(f"invalid VisionConfig: size must be a positive multiple of 8, got {self.size}")
        if self.channels <= 0 or not 1 <= self.grid <= self.size // 8:
            raise UniMoEError(f"invalid VisionConfig: channels must be positive and grid in [1, size / 8], "
                              f"got {self.channels}, {self.grid}")
        if not self.max_seconds > 0:
            raise UniMoEError(f"invalid VisionConfig: max_seconds must be positive, got {self.max_seconds}")

    @property
    def tokens_per_frame(self) -> int:
        return self.grid * self.grid


def time_features(times: torch.Tensor) -> torch.Tensor:
    """times [T] in seconds -> [T, 2 · len(TIME_PERIODS)] sin/cos features."""
    angles = 2 * math.pi * times[:, None] / torch.tensor(TIME_PERIODS, device=times.device)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class VisionEncoder(nn.Module):
    def __init__(self, config: VisionConfig, hidden_size: int):
        super().__init__()
        self.config = c = config
        self.conv1 = nn.Conv2d(6, c.channels, kernel_size=4, stride=4)
        self.conv2 = nn.Conv2d(c.channels, c.channels, kernel_size=2, stride=2)
        self.proj = nn.Linear(c.channels, hidden_size)
        self.slot = nn.Embedding(c.tokens_per_frame, hidden_size)
        self.time = nn.Linear(2 * len(TIME_PERIODS), hidden_size)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames uint8 [B, T, S, S, 3] -> tokens [B, T · grid², D] (frame-major)."""
        c = self.config
        if frames.dim() != 5 or frames.shape[2:] != (c.size, c.size, 3):
            raise UniMoEError(f"video frames must be [B, T, {c.size}, {c.size}, 3], got {list(frames.shape)}")
        b, t = frames.shape[:2]
        dtype = self.proj.weight.dtype
        x = frames.to(dtype).permute(0, 1, 4, 2, 3) / 255  # [B, T, 3, S, S]
        motion = torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], dim=1)
        h = torch.cat([x, motion], dim=2).flatten(0, 1)  # [B·T, 6, S, S]
        h = F.gelu(self.conv2(F.gelu(self.conv1(h))))
        h = F.adaptive_avg_pool2d(h, c.grid).flatten(2).transpose(1, 2)  # [B·T, grid², C]
        tokens = (self.proj(h) + self.slot.weight).view(b, t, c.tokens_per_frame, -1)
        when = self.time(time_features(torch.arange(t, device=frames.device, dtype=torch.float32) / c.fps).to(dtype))
        return (tokens + when[None, :, None]).flatten(1, 2)
