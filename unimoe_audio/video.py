"""Video files <-> RGB frames, through PyAV (its wheels bundle FFmpeg; no system FFmpeg needed).

`read_video(path, fps, size, max_seconds)` decodes the first video stream and samples it at a
fixed rate: frame k shows what is on screen at time k / fps (the latest decoded frame whose
timestamp is not after it), cropped to the centre square and resized to size × size (with
`size=None`, as the stream stores it: for a model that resizes frames itself). So a clip
of d seconds gives about d · fps frames whatever its own frame rate, and frame k's time is known
exactly, which is what lines video tokens up with audio. `write_video` writes H.264 (mpeg4 where
the FFmpeg build has no libx264), atomically.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from unimoe_audio.errors import UniMoEError
from unimoe_audio.io import atomic_path

MAX_SIDE = 8192  # a stream wider or taller than this is not a video this project can use
MAX_SIZE = 1024  # largest frame side `read_video` resizes to
MAX_FPS = 120.0


def check_rate(fps: float, what: str) -> float:
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or not 0 < fps <= MAX_FPS:
        raise UniMoEError(f"{what} must be a frame rate in (0, {MAX_FPS:g}] frames per second, got {fps!r}")
    return float(fps)


def read_video(path: str | Path, fps: float = 8.0, size: int | None = 32,
               max_seconds: float = 60.0) -> tuple[np.ndarray, float]:
    """-> (frames uint8 [T, size, size, 3] RGB, fps): the video sampled at `fps` frames per second
    (`size=None`: frames [T, H, W, 3] at the stream's own size, uncropped).

    Raises UniMoEError for a missing or unreadable file, a file without a video stream, a stream
    of absurd dimensions, a video longer than `max_seconds`, or one that decodes to no frame.
    """
    import av

    fps = check_rate(fps, "the video frame rate")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_SIZE):
        raise UniMoEError(f"the video frame size must be an integer number of pixels in [1, {MAX_SIZE}], got {size!r}")
    if not isinstance(max_seconds, (int, float)) or not math.isfinite(max_seconds) or max_seconds <= 0:
        raise UniMoEError(f"max_seconds must be a positive number, got {max_seconds!r}")
    path = Path(path)
    if not path.is_file():
        raise UniMoEError(f"video not found: {path}")
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UniMoEError(f"{path} has no video stream")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
                raise UniMoEError(f"{path}: a {width}×{height} video; frames must be 1 to {MAX_SIDE} pixels on each side")
            rate = float(stream.average_rate or stream.guessed_rate or 25)
            if size is None:
                w, h, keep = width, height, (height, width)
            else:  # the short side becomes `size`, then the centre square is kept
                scale = size / min(width, height)
                w, h, keep = max(size, round(width * scale)), max(size, round(height * scale)), (size, size)
            latest, start = None, None
            for i, frame in enumerate(container.decode(stream)):
                t = float(frame.time) if frame.time is not None else i / rate
                start = t if start is None else start
                t -= start
                while latest is not None and len(frames) / fps < t:  # every sample time before this frame
                    frames.append(latest)
                if t > max_seconds:
                    raise UniMoEError(f"{path} is longer than {max_seconds:g} s; cut it to at most {max_seconds:g} s")
                image = frame.to_ndarray(width=w, height=h, format="rgb24")
                top, left = (h - keep[0]) // 2, (w - keep[1]) // 2
                latest = image[top: top + keep[0], left: left + keep[1]]
            if latest is not None:  # the last frame lasts one frame period
                while len(frames) / fps < (t + 1 / rate) - 1e-9:
                    frames.append(latest)
    except UniMoEError:
        raise
    except (av.FFmpegError, ValueError, OSError) as err:
        raise UniMoEError(f"cannot read the video {path}: {err}") from None
    if not frames:
        raise UniMoEError(f"{path} decodes to no video frames")
    return np.stack(frames), fps


def write_video(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """Write frames uint8 [T, H, W, 3] (RGB; H and W even) as an MP4 video at `fps`, atomically."""
    import av

    fps = check_rate(fps, "fps")
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise UniMoEError(f"video frames must be a non-empty uint8 array [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    t, h, w, _ = frames.shape
    if h % 2 or w % 2 or not (2 <= h <= MAX_SIDE and 2 <= w <= MAX_SIDE):
        raise UniMoEError(f"video frames must have an even height and width of 2 to {MAX_SIDE} pixels, got {h}×{w}")
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    path = Path(path)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream(codec, rate=_rational(fps))
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            if codec == "libx264":
                stream.options = {"crf": "18", "preset": "veryfast"}
            for image in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")))
            container.mux(stream.encode())
    return path


def _rational(fps: float):
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001)
