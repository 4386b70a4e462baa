"""Videos for the corpus's music clips, drawn from the same score and tempo as the audio.

Each frame (64 × 64 pixels, 16 frames/s) shows the moment t of the clip:

- **background**: the key. Hue = the tonic's pitch class (30° apart around the colour wheel);
  major keys light and soft, minor keys dark and saturated.
- **pulse**: a white disc that swells on every beat (a quarter note at the clip's BPM) and shrinks
  within about 0.2 s, so the tempo and the beat phase are visible in every few frames.
- **piano roll**: the notes of the next 2 s (and the last 0.7 s) scrolling leftwards past a "now"
  line, pitch upwards; notes sounding now are drawn white.
- **cuts**: at every phrase boundary (4 bars) the disc jumps to another corner and the background
  lightness steps, as a cut between shots would.

So what a v2m model must take from the video (tempo, beats, key and mode; the caption of a v2m
item leaves them out) is all drawn, and nothing else about the audio is. Drawing is numpy only;
a 15 s clip takes a fraction of a second, the file a few kilobytes.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unimoe_audio.video import write_video

RENDER_FPS = 16
RENDER_SIZE = 64
PHRASE_BARS = 4
PULSE_DECAY_S = 0.12  # the disc's swell decays with this time constant
ROLL_PAST_S, ROLL_AHEAD_S = 0.7, 2.0
PITCH_RANGE = (36, 96)  # MIDI pitches mapped to the frame's height


@dataclass(frozen=True)
class Timeline:
    """What the clip plays, in seconds from its first sample."""

    duration: float
    notes: tuple[tuple[float, float, int], ...]  # (start, end, MIDI pitch)
    beats: tuple[float, ...]
    phrases: tuple[float, ...]  # times of the phrase boundaries (cuts)
    tonic: int  # pitch class 0-11 (C = 0)
    mode: str  # major | minor


def key_colour(tonic: int, mode: str, shade: float = 0.0) -> np.ndarray:
    """RGB in [0, 1] of the background for a key (`shade` brightens a phrase by a little)."""
    value, saturation = (0.75, 0.45) if mode == "major" else (0.35, 0.8)
    return np.array(colorsys.hsv_to_rgb((tonic % 12) / 12, saturation, min(1.0, value + shade)))


def draw_frames(timeline: Timeline, fps: float = RENDER_FPS, size: int = RENDER_SIZE) -> np.ndarray:
    """uint8 [T, size, size, 3]: the frames of `timeline` at `fps`."""
    count = max(1, int(np.ceil(timeline.duration * fps)))
    yy, xx = np.mgrid[0:size, 0:size]
    beats, phrases = np.asarray(timeline.beats), np.asarray(timeline.phrases)
    notes = np.asarray(timeline.notes, dtype=np.float64).reshape(-1, 3)
    corners = ((0.22, 0.22), (0.22, 0.78), (0.78, 0.78), (0.78, 0.22))  # (y, x) of the disc per phrase
    now_x = ROLL_PAST_S / (ROLL_PAST_S + ROLL_AHEAD_S) * size
    px_per_s = size / (ROLL_PAST_S + ROLL_AHEAD_S)
    low, high = PITCH_RANGE
    frames = np.empty((count, size, size, 3), dtype=np.float32)
    for i in range(count):
        t = i / fps
        phrase = int((phrases <= t).sum())
        frame = frames[i]
        frame[:] = key_colour(timeline.tonic, timeline.mode, 0.08 * (phrase % 2))
        # piano roll: one bar per visible note
        visible = notes[(notes[:, 1] > t - ROLL_PAST_S) & (notes[:, 0] < t + ROLL_AHEAD_S)]
        for start, end, pitch in visible:
            x0, x1 = (int(np.clip(now_x + (s - t) * px_per_s, 0, size)) for s in (start, end))
            y = int(np.clip((high - pitch) / (high - low) * (size - 2), 0, size - 2))
            sounding = start <= t < end
            frame[y: y + 2, x0: max(x1, x0 + 1)] = (1.0, 1.0, 1.0) if sounding else (0.1, 0.1, 0.1)
        frame[:, int(now_x)] = 0.6 * frame[:, int(now_x)] + 0.4
        # pulse: radius swells at each beat
        past = beats[beats <= t]
        swell = float(np.exp(-(t - past[-1]) / PULSE_DECAY_S)) if len(past) else 0.0
        cy, cx = corners[phrase % len(corners)]
        radius = size * (0.06 + 0.12 * swell)
        inside = (yy - cy * size) ** 2 + (xx - cx * size) ** 2 <= radius ** 2
        frame[inside] = 0.3 + 0.7 * swell
    return (frames.clip(0, 1) * 255).round().astype(np.uint8)


def render_video(timeline: Timeline, out: Path, fps: float = RENDER_FPS, size: int = RENDER_SIZE) -> Path:
    """Draw `timeline` and write it to `out` (MP4, atomically)."""
    return write_video(out, draw_frames(timeline, fps, size), fps)
