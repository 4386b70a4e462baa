"""The vision path: video tokens between <video> … </video>, the music follows the video, and
models without a vision encoder load and work as before."""

import json

import numpy as np
import pytest
import torch

from unimoe_audio.codec import DelayPattern
from unimoe_audio.data import Example
from unimoe_audio.errors import UniMoEError
from unimoe_audio.model import (FrontendPrompts, GenerationConfig, SequenceCollator, TextFrontend, UniMoEAudio,
                                UniMoEAudioModel, VisionConfig)
from unimoe_audio.video import write_video

from .conftest import C, ENTRIES, K, tiny_codec, tiny_config

VISION = VisionConfig(fps=4.0, size=16)
V2M = {"id": "v", "task": "v2m", "group": "v2m", "language": None, "caption": "Music for this video.", "video": "v.mp4"}


@pytest.fixture(scope="module")
def video_api():
    frontend = TextFrontend.fit(ENTRIES + [V2M])
    torch.manual_seed(0)
    return UniMoEAudio(UniMoEAudioModel(tiny_config(frontend, vision=VISION)), frontend, tiny_codec())


def frames(seed: int, count: int = 12) -> torch.Tensor:
    return torch.randint(0, 256, (count, 16, 16, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_different_videos_give_different_music_for_the_same_seed(video_api):
    config = GenerationConfig(max_frames=16, min_frames=16, seed=3)

    def music(video):
        return video_api.generator.run([video_api.request("v2m", caption="music for this video.", video=video)], config)[0]

    first, again, other = music(frames(1)), music(frames(1)), music(frames(2))
    assert torch.equal(first, again)
    assert (first != other).float().mean() > 0.3


def test_video_tokens_sit_between_the_markers_and_the_unconditional_row_drops_video_and_caption(video_api):
    prompts, f = video_api.generator.prompts, video_api.frontend
    request = video_api.request("v2m", caption="music for this video.", video=frames(1, 5))
    cond, uncond = prompts.encode(request, True), prompts.encode(request, False)
    ids = cond.tokens.tolist()
    start, end = ids.index(f["<video>"]), ids.index(f["</video>"])
    assert ids[start + 1:end] == [f["<frame>"]] * 5 and cond.is_video.nonzero().flatten().tolist() == list(range(start + 1, end))
    assert ids[end + 1] == f["<caption>"] and torch.equal(cond.video, request.video)
    assert uncond.video is None and uncond.is_video is None
    assert uncond.tokens.tolist() == [f["<bos>"], f["<v2m>"], f["<video>"], f["</video>"], f["<caption>"], f["</caption>"], f["<audio>"]]


def test_a_music_excerpt_keeps_the_video_of_the_same_moments_and_training_reaches_the_encoder(video_api):
    pattern = DelayPattern(video_api.model.config.delays, C)
    collate = SequenceCollator(FrontendPrompts(video_api.frontend, pattern, VISION), max_music_frames=25)
    # 40 codec frames per second of the video at 4 frames/s: video frame i shows codec frame 10·i
    video = torch.arange(20, dtype=torch.uint8)[:, None, None, None].expand(20, 16, 16, 3).contiguous()
    ex = Example(meta=V2M, codes=torch.arange(200).remainder(C).expand(K, 200).contiguous(), prompt_codes=None,
                 video=video, video_step=10.0)
    for seed in range(5):
        cut = collate.excerpt(ex, np.random.default_rng(seed))
        first = int(cut.video[0, 0, 0, 0])
        assert int(cut.codes[0, 0]) == (10 * first) % C and len(cut.video) == 3  # frames at 0, 10, 20 of 25
    batch = collate([ex, Example(meta=ENTRIES[3], codes=torch.zeros(K, 9, dtype=torch.long), prompt_codes=None)],
                    np.random.default_rng(0))
    assert batch["video_frames"].tolist() == [3, 0] and batch["is_video"].sum(1).tolist() == [3, 0]
    model = video_api.model.train()
    try:
        model(**batch).loss.backward()
        assert model.vision.conv1.weight.grad.abs().sum() > 0 and model.vision.time.weight.grad.abs().sum() > 0
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_music_from_a_video_file_lasts_as_long_as_the_video_and_reloads_the_same(video_api, tmp_path):
    clip = write_video(tmp_path / "clip.mp4", np.random.default_rng(0).integers(0, 256, (10, 32, 48, 3), dtype=np.uint8), 10)
    config = GenerationConfig(seed=0)
    wave, rate = video_api.music(video=clip, config=config)  # 1 s of video, no caption
    assert abs(len(wave) / rate - 1.0) < 0.05
    saved = video_api.save_pretrained(tmp_path / "model")
    assert json.loads((saved / "config.json").read_text())["vision"]["fps"] == 4.0
    again, _ = UniMoEAudio.from_pretrained(saved).music(video=clip, config=config)
    np.testing.assert_array_equal(wave, again)


def test_models_without_vision_keep_their_config_and_refuse_a_video(frontend, codec, tmp_path):
    api = UniMoEAudio(UniMoEAudioModel(tiny_config(frontend)), frontend, codec)
    saved = api.save_pretrained(tmp_path / "old")
    assert "vision" not in json.loads((saved / "config.json").read_text())  # as written before vision existed
    assert "video" not in json.loads((saved / "frontend.json").read_text())
    assert UniMoEAudio.from_pretrained(saved).model.vision is None
    with pytest.raises(UniMoEError, match="no vision encoder"):
        api.music("a jig.", video=frames(1).numpy())
    with pytest.raises(UniMoEError, match="needs a video"):
        api.request("v2m", caption="a jig.")
