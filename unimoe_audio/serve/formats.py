"""Audio response bodies: wav and flac (16-bit), raw pcm (16-bit signed little-endian, mono, at the
model's rate: the `X-Sample-Rate` header says which). Streams are wav or pcm: a wav stream starts
with a header whose sizes say "unknown length", as OpenAI's streamed wav does."""

from __future__ import annotations

import io
import struct

import numpy as np
import soundfile as sf

MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "pcm": "audio/pcm"}
STREAMABLE = ("wav", "pcm")
UNKNOWN_SIZE = 0xFFFFFFFF


def pcm16(wave: np.ndarray) -> np.ndarray:
    """A clip (float32 [T]) as the 16-bit samples every format carries."""
    return (np.clip(wave, -1.0, 1.0) * 32767).round().astype("<i2")


def encode(wave: np.ndarray, rate: int, fmt: str) -> bytes:
    """A clip (float32 [T]) in `fmt` (one of MEDIA_TYPES); every format holds the same samples."""
    samples = pcm16(wave)
    if fmt == "pcm":
        return samples.tobytes()
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, subtype="PCM_16", format=fmt.upper())
    return buffer.getvalue()


def stream_header(rate: int, fmt: str) -> bytes:
    """What a stream in `fmt` starts with (a wav header of unknown length; nothing for pcm)."""
    if fmt == "pcm":
        return b""
    return (b"RIFF" + struct.pack("<I", UNKNOWN_SIZE) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" + struct.pack("<I", UNKNOWN_SIZE))
