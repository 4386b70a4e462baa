"""Video files <-> frames (PyAV): sampling at a fixed rate and size, and clear errors for bad videos."""

import numpy as np
import pytest
import soundfile as sf

from unimoe_audio.errors import UniMoEError
from unimoe_audio.video import read_video, write_video


def coloured(count: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Frame i is flat grey at level 6·i, with a white square in the centre."""
    frames = np.repeat((np.arange(count, dtype=np.uint8) * 6)[:, None, None, None], height * width * 3, axis=1)
    frames = frames.reshape(count, height, width, 3)
    frames[:, height // 2 - 4: height // 2 + 4, width // 2 - 4: width // 2 + 4] = 255
    return frames


def test_frames_are_sampled_at_the_asked_rate_cropped_and_resized(tmp_path):
    path = write_video(tmp_path / "clip.mp4", coloured(40), fps=10)  # 4 s
    frames, fps = read_video(path, fps=5, size=16)
    assert fps == 5 and frames.shape == (20, 16, 16, 3) and frames.dtype == np.uint8
    # sample k shows source frame 2k (time k / 5 s): grey level 12k, the square still in the centre
    assert np.abs(frames[:, 0, 0].mean(-1) - 12 * np.arange(20)).max() <= 4
    assert (frames[:, 8, 8] > 240).all()
    assert read_video(path, fps=20, size=48)[0].shape == (80, 48, 48, 3)  # a faster rate repeats frames


def test_size_none_keeps_the_streams_own_frames(tmp_path):
    """For a model that resizes frames itself (a released checkpoint's vision tower): no crop, no resize."""
    path = write_video(tmp_path / "clip.mp4", coloured(10, 48, 64), fps=10)
    frames, _ = read_video(path, fps=2, size=None)
    assert frames.shape == (2, 48, 64, 3)
    assert (frames[:, 24, 32] > 240).all() and np.abs(frames[:, 0, 0].mean(-1) - [0, 30]).max() <= 4


def test_write_is_atomic_and_checks_its_frames(tmp_path):
    with pytest.raises(UniMoEError, match="even height and width"):
        write_video(tmp_path / "odd.mp4", coloured(3, 47, 64), fps=8)
    with pytest.raises(UniMoEError, match="uint8"):
        write_video(tmp_path / "float.mp4", coloured(3).astype(np.float32), fps=8)
    with pytest.raises(UniMoEError, match="frame rate"):
        write_video(tmp_path / "rate.mp4", coloured(3), fps=0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind, kwargs, message", [
    ("missing", {}, "video not found"),
    ("text", {}, "cannot read the video"),
    ("audio", {}, "has no video stream"),
    ("long", {"max_seconds": 2.0}, "longer than 2 s"),
    ("good", {"fps": 0}, "frame rate"),
    ("good", {"fps": float("nan")}, "frame rate"),
    ("good", {"size": 0}, "frame size"),
    ("good", {"size": 4096}, "frame size"),
    ("good", {"max_seconds": -1}, "max_seconds"),
])
def test_bad_videos_and_settings_get_a_clear_error(tmp_path, kind, kwargs, message):
    path = tmp_path / f"{kind}.mp4"
    if kind == "text":
        path.write_text("not a video")
    elif kind == "audio":
        path = tmp_path / "audio.wav"
        sf.write(path, np.zeros(1600, np.float32), 16_000)
    elif kind in ("long", "good"):
        write_video(path, coloured(30), fps=10)  # 3 s
    with pytest.raises(UniMoEError, match=message):
        read_video(path, **kwargs)
