"""Video for released checkpoints against the released forward() with videos (fixtures/released/video.safetensors).

make_video_fixture.py ran the released code on the tiny checkpoint tiny.py rebuilds here: its frame
resizing, the checkpoint's Qwen2.5-VL processor, get_rope_index, the vision tower (its blocks given
transformers' window masks, see vision.py) and forward(), on a left-padded batch of two videos.
"""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from unimoe_audio.errors import UniMoEError
from unimoe_audio.model import GenerationConfig, UniMoEAudio
from unimoe_audio.model.released import ReleasedUniMoEAudio
from unimoe_audio.model.released.vision import VideoPreprocessing, prepare_video

from ..conftest import RELEASED_FIXTURES

with safe_open(str(RELEASED_FIXTURES / "video.safetensors"), "pt") as _f:
    FX = {k: _f.get_tensor(k) for k in _f.keys()}
    META = {k: json.loads(v) for k, v in _f.metadata().items()}
GREEDY = GenerationConfig(decoding="released", max_frames=6, min_frames=6, temperature=0.0)


@pytest.fixture(scope="module")
def api(released_folder):
    return UniMoEAudio.from_pretrained(released_folder)


def close(actual, expected, tol):
    assert actual.shape == expected.shape
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= tol, err


def test_frames_become_the_released_processors_patches_grids_and_seconds_per_grid(api):
    pre = VideoPreprocessing.from_folder(api.directory)
    videos = [prepare_video(FX[f"frames.{i}"], fps, pre, int(META["total_pixels"])) for i, fps in enumerate(META["fps"])]
    assert [v.grid for v in videos] == [tuple(g) for g in FX["video_grid_thw"].tolist()]
    assert [v.seconds_per_grid for v in videos] == FX["second_per_grid_ts"].tolist()
    # resized to 56×56 from 50×70 and to 28×84 from 30×80: the bicubic resize matches torchvision's
    close(torch.cat([v.pixels for v in videos]), FX["pixel_values_videos"], 1e-5)


def test_forward_with_video_matches_released_tokens_positions_features_and_logits(api):
    """The whole path: prompt ids, 3-D positions, vision features, hidden states and codec logits."""
    ids, valid = FX["input_ids"], FX["attention_mask"].bool()
    prompts, model = api.generator.prompts, api.model
    api.vision().total_pixels = int(META["total_pixels"])
    audio_frames = 3  # the fixture's rows end with the BOS frame and two more audio frames
    requests = [api.request("v2m", caption=META["captions"][0], video=FX["frames.0"], video_fps=META["fps"][0]),
                api.request("v2m", caption="any", video=FX["frames.1"], video_fps=META["fps"][1])]
    segments = [prompts.encode(requests[0], True), prompts.encode(requests[1], False)]  # row 1: "Low quality."
    positions = FX["position_ids"].clone()
    where = torch.zeros_like(valid)
    for i, seg in enumerate(segments):
        row = ids[i][valid[i]]
        assert torch.equal(seg.tokens, row[:len(row) - audio_frames + 1])  # the released prompt, token for token
        assert torch.equal(seg.positions, FX["position_ids"][:, i][:, valid[i]][:, :seg.tokens.shape[0]])
        n = valid[i].sum()
        positions[:, i, -n:][:, seg.tokens.shape[0]:] = seg.positions.max() + torch.arange(1, audio_frames)
        where[i, -n:][:seg.tokens.shape[0]] = seg.is_video
    close(positions[:, valid], FX["position_ids"][:, valid], 0)  # the audio positions after the prompt: max + 1, …
    features = torch.cat([s.video_features for s in segments])
    close(features, FX["video_features"], 1e-5)
    assert (features - FX["video_features_unmasked"]).abs().max() > 1e-3  # the released SDPA path mixes windows
    is_audio = ids == prompts.audio_id
    audio = torch.full((2, 12, ids.shape[1]), 1025)
    audio.permute(0, 2, 1)[is_audio] = FX["codec_input_ids"]
    n = ids.shape[1]
    mask = (torch.ones(n, n, dtype=torch.bool).tril() & valid[:, None, :] | torch.eye(n, dtype=torch.bool))[:, None]
    with torch.no_grad():  # left padding: keys at pads masked, as in generation
        hidden, _, _ = model.hidden(ids, audio, is_audio, positions, pad_mask=~valid, attn_mask=mask,
                                    is_video=where, video_features=features)
    close(hidden[valid], FX["hidden_states"][-1][valid], 1e-4)
    close(model.logits(hidden[:, -3:]).float(), FX["codec_logits"], 1e-4)
    with torch.no_grad():  # without the 3-D positions the output is not the released one
        flat, _, _ = model.hidden(ids, audio, is_audio, positions.amax(0), pad_mask=~valid, attn_mask=mask,
                                  is_video=where, video_features=features)
    assert (flat[valid] - FX["hidden_states"][-1][valid]).abs().max() > 1e-2
    with torch.no_grad():  # equal time, height and width positions are 1-D RoPE exactly (text and audio)
        same, _, _ = model.hidden(ids, audio, is_audio, positions.amax(0).expand(3, -1, -1), pad_mask=~valid,
                                  attn_mask=mask, is_video=where, video_features=features)
    assert torch.equal(same, flat)


def test_music_follows_the_video_same_seed_same_video_same_codes(api):
    clip = FX["frames.0"]
    config = GenerationConfig(decoding="released", max_frames=6, min_frames=6, seed=3)
    runs = [api.generator.run([api.request("t2m" if v is None else "v2m", caption="A calm piano piece.", video=v)],
                              config)[0]
            for v in (clip, clip.clone(), clip.flip(2), None)]  # the same video twice, mirrored, none
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2]) and not torch.equal(runs[0], runs[3])


def test_video_music_batches_with_other_requests_row_by_row_and_lasts_as_long_as_the_video(api):
    """A video request in a batch with a text-only one: each row gets the codes it gets alone.
    `music()` gives the same codes for the video's first `duration` seconds and, without a duration,
    music as long as the video."""
    plain, first = api.request("t2m", caption="Fast jazz drums."), FX["frames.1"][:1]
    together = api.generator.run([plain, api.request("v2m", caption="A calm piano piece.", video=first, video_fps=4.0)],
                                 GREEDY)
    assert torch.equal(together[0], api.generator.run([plain], GREEDY)[0])
    seconds = GREEDY.max_frames / api.codec.frame_rate  # 3 ms of the tiny codec: the video's first frame shows
    wave, rate = api.music("A calm piano piece.", seconds, config=GREEDY, video=FX["frames.1"].numpy(), video_fps=4.0)
    assert rate == 16_000 and np.array_equal(wave, api.decode(together[1]))
    wave, _ = api.music("A calm piano piece.", config=GREEDY, video=FX["frames.1"][:2], video_fps=100.0)
    assert len(wave) == 40 * 8  # 2 frames at 100 frames/s: 20 ms, 40 frames of the tiny codec (hop 8)


@pytest.mark.parametrize("video, message", [
    (np.zeros((0, 28, 28, 3), np.uint8), "no pixels"),
    (np.zeros((2, 28, 28), np.uint8), r"uint8 \[T, H, W, 3\]"),
    (np.zeros((2, 28, 28, 3), np.float32), r"uint8 \[T, H, W, 3\]"),
    (np.zeros((1, 2, 500, 3), np.uint8), "aspect ratio"),
    ("clip.mp4", "unimoe_audio.video|clip.mp4"),
    ([1, 2, 3], "frames"),
])
def test_bad_videos_are_refused_with_what_to_do(api, video, message):
    with pytest.raises(UniMoEError, match=message):
        api.music("A calm piano piece.", config=GREEDY, video=video)


def test_video_needs_a_vision_tower_and_music(api, tmp_path):
    frames = FX["frames.0"]
    with pytest.raises(UniMoEError, match="video_fps"):
        api.music("A calm piano piece.", config=GREEDY, video=frames, video_fps=0.0)
    with pytest.raises(UniMoEError, match="takes no video"):
        api.request("clone", text="Hi.", language="en", prompt_audio=(np.ones(16_000, np.float32) * 0.1, 16_000),
                    prompt_text="Hello.", video=frames)
    blind = tmp_path / "blind"  # the same checkpoint without its vision tower
    shutil.copytree(api.directory, blind)
    for shard in blind.glob("model-*.safetensors"):
        with safe_open(str(shard), "pt") as f:
            save_file({k: f.get_tensor(k) for k in f.keys() if not k.startswith("visual.")}, str(shard))
    index = json.loads((blind / "model.safetensors.index.json").read_text())
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if not k.startswith("visual.")}
    (blind / "model.safetensors.index.json").write_text(json.dumps(index))
    blind_api = ReleasedUniMoEAudio(api.model, api.tokenizer, api.spec, api.codec, blind)
    with pytest.raises(UniMoEError, match="no vision tower"):
        blind_api.music("A calm piano piece.", config=GREEDY, video=frames)


def test_generate_cli_makes_music_for_a_video_with_a_converted_folder(api, tmp_path, capsys):
    """`unimoe-audio generate --task v2m --video` on a converted released folder: music as long as
    the video read at --video-fps (3 frames at 100 frames/s: 30 ms, 60 frames of the tiny codec)."""
    from unimoe_audio.cli.main import main
    from unimoe_audio.codec import load_audio
    from unimoe_audio.video import write_video

    converted, out = tmp_path / "converted", tmp_path / "music.wav"
    assert main(["convert", "--from-released", str(api.directory), "--out", str(converted)]) == 0
    clip = write_video(tmp_path / "clip.mp4", FX["frames.0"].numpy(), fps=100)
    assert main(["generate", "--model", str(converted), "--task", "v2m", "--video", str(clip), "--video-fps", "100",
                 "--caption", "A calm piano piece.", "--seed", "0", "-o", str(out)]) == 0
    wave, rate = load_audio(out)
    assert len(wave) == 60 * 8 and "(0.03 s of audio" in capsys.readouterr().out
    assert main(["generate", "--model", str(converted), "--task", "music", "--video-fps", "2", "--caption", "x",
                 "-o", str(out)]) == 2
    assert "--video-fps is for --task v2m" in capsys.readouterr().err
