"""The corpus's videos: drawn from the clip's beats, key and phrases so that the video determines them."""

import numpy as np

from unimoe_audio.data.build import video_items
from unimoe_audio.data.schema import check_entry
from unimoe_audio.data.videos import Timeline, draw_frames, key_colour
from unimoe_audio.eval.music import video_beats


def test_the_beat_disc_pulses_on_every_beat_and_the_key_sets_the_colour():
    beats = tuple(0.3 + 0.5 * k for k in range(8))
    line = Timeline(4.0, ((0.3, 1.3, 60), (1.3, 4.0, 67)), beats, (2.3,), tonic=2, mode="minor")  # cut on a beat
    frames = draw_frames(line, fps=16, size=32)
    assert frames.shape == (64, 32, 32, 3)
    found = video_beats(frames, 16)
    assert len(found) == len(beats) and np.abs(found - np.array(beats)).max() <= 1 / 16
    corner = frames[:, 31, 0].astype(float) / 255  # background only: bottom-left pixel, away from the notes
    assert np.allclose(corner[0], key_colour(2, "minor"), atol=0.01)
    assert not np.allclose(corner[40], corner[0], atol=0.01)  # the cut at 2.3 s steps the background
    assert not np.allclose(key_colour(2, "major"), key_colour(2, "minor")) and not np.allclose(key_colour(2, "major"),
                                                                                              key_colour(3, "major"))


def test_a_music_clip_with_a_video_becomes_a_v2m_item_in_its_split():
    clip = {"id": "music-00001", "task": "t2m", "group": "music", "language": None, "caption": "A jig at 120 BPM in D major.",
            "video_caption": "Music for this video on violin.", "audio": "audio/music-00001.wav", "bpm": 120, "split": "test"}
    plain = {**clip, "id": "music-00002", "video_caption": None}
    (item,) = video_items([clip, plain])
    assert check_entry(item, "x") and item["split"] == "test" and item["video"] == "videos/music-00001.mp4"
    assert item["caption"] == "Music for this video on violin." and "video_caption" not in clip
