"""Video for released checkpoints: frames -> Qwen2.5-VL vision tower -> video tokens with 3-D positions.

The released folder holds a Qwen2.5-VL vision tower (`visual.*`, config.json `vision_config`) that
its training `forward()` uses and its `generate()` never calls. Here it runs through transformers'
own `Qwen2_5_VisionTransformerPretrainedModel`, fed as the released code feeds it:

1. Resize (released `video_text_to_music`): every frame to the same size, multiples of
   patch·merge = 28 px, aspect kept, within a per-frame pixel budget
   max(min(64·28², total_pixels / T · 2), 1.05·28²) and at least 28² (Qwen's `smart_resize`);
   bicubic with antialiasing, rounded to 8 bits. `total_pixels` is the released default 3·28²
   (`ReleasedVision.total_pixels` changes it): one frame then gives 6 video tokens.
2. The checkpoint's video preprocessor (`video_preprocessor_config.json`, else
   `preprocessor_config.json`): (x − 255·mean) / (255·std); frames padded to a multiple of the
   temporal patch (2) with copies of the last; patches of 3 × 2 × 14 × 14 values, each merge
   window's 2 × 2 patches adjacent -> grid (t, h, w) in patches.
3. The tower's output: one feature per merge window, t·h·w / 4 video tokens.
4. Prompt: `<|vision_start|>` + one `<|video_pad|>` per video token + `<|vision_end|>` at the start
   of the user turn, before the music caption (the released template leaves no place for them:
   this is Qwen2-VL's convention, which the authors' UniMoE-V2 training data also follows).
5. Positions (Qwen2.5-VL's `get_rope_index`): text counts on from the last position; the video
   token of grid cell (t, h, w) takes (s + t·⌊2/fps⌋·tokens_per_second, s + h, s + w), with s the
   position after the preceding text (⌊·⌋: the released code truncates the seconds per grid step to an
   integer); the text after the video starts at the largest of those + 1.

Against the released forward() (tests/fixtures/released/video.safetensors), with one exception:
the released tower, run with SDPA or eager attention as its code loads it, passes its blocks no
attention mask, so they attend across windows, frames and videos of a batch; transformers keeps
them apart, as Qwen2.5-VL was built (and as flash-attention-2 runs the released tower).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from unimoe_audio.errors import UniMoEError
from unimoe_audio.model.sequence import check_frames
from unimoe_audio.video import check_rate

TOTAL_PIXELS = 3 * 28 * 28  # released video_text_to_music default: the pixel budget of the whole video
VIDEO_FPS = 1.0  # released default: frames sampled per second of video
MAX_VIDEO_SECONDS = 30.0  # longest video read from a file (at full frame size: T·H·W·3 bytes in memory)
MIN_PIXELS, MAX_PIXELS = 28 * 28, 64 * 28 * 28  # per frame
MAX_RATIO = 200  # Qwen's limit on a frame's aspect ratio
VISION_TOKENS = ("<|vision_start|>", "<|video_pad|>", "<|vision_end|>")
PREPROCESSOR_FILES = ("video_preprocessor_config.json", "preprocessor_config.json")
VISUAL = re.compile(r"^visual\.")


@dataclass(frozen=True)
class VideoPreprocessing:
    """The checkpoint's video preprocessor settings."""

    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    rescale: float = 1 / 255  # 1.0 when the config says do_rescale false

    @classmethod
    def from_folder(cls, directory: str | Path) -> "VideoPreprocessing":
        directory = Path(directory)
        path = next((directory / n for n in PREPROCESSOR_FILES if (directory / n).is_file()), None)
        if path is None:
            raise UniMoEError(f"{directory} has neither {' nor '.join(PREPROCESSOR_FILES)}: copy the checkpoint's "
                              "preprocessor files next to its config.json")
        try:
            raw = json.loads(path.read_text())
            normalize = raw.get("do_normalize", True)
            return cls(int(raw["patch_size"]), int(raw["temporal_patch_size"]), int(raw["merge_size"]),
                       tuple(raw["image_mean"]) if normalize else (0.0,) * 3,
                       tuple(raw["image_std"]) if normalize else (1.0,) * 3,
                       float(raw.get("rescale_factor", 1 / 255)) if raw.get("do_rescale", True) else 1.0)
        except (ValueError, KeyError, TypeError) as err:
            raise UniMoEError(f"{path} is not a Qwen2.5-VL preprocessor config: {err!r}") from None


@dataclass
class PreparedVideo:
    pixels: torch.Tensor  # [t·h·w, 3·tp·p·p] float32 patches
    grid: tuple[int, int, int]  # (t, h, w) in patches
    seconds_per_grid: float  # temporal patch / fps


def frame_size(height: int, width: int, frames: int, factor: int, total_pixels: int = TOTAL_PIXELS) -> tuple[int, int]:
    """The released resize target (module docstring, step 1): Qwen's smart_resize under the budget."""
    max_pixels = max(min(MAX_PIXELS, total_pixels / frames * 2), int(MIN_PIXELS * 1.05))
    h, w = max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)  # Qwen's rule gives 0 for thin frames
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < MIN_PIXELS:
        beta = math.sqrt(MIN_PIXELS / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


def prepare_video(frames: torch.Tensor, fps: float, pre: VideoPreprocessing,
                  total_pixels: int = TOTAL_PIXELS) -> PreparedVideo:
    """Frames [T, H, W, 3] uint8 sampled at `fps` -> patches and grid (module docstring, steps 1-2)."""
    check_rate(fps, "video_fps")
    frames = check_frames(frames)
    if max(frames.shape[1:3]) / min(frames.shape[1:3]) > MAX_RATIO:
        raise UniMoEError(f"video frames of {frames.shape[1]}×{frames.shape[2]} px: the aspect ratio must stay "
                          f"below {MAX_RATIO}")
    p, tp, m = pre.patch_size, pre.temporal_patch_size, pre.merge_size
    h, w = frame_size(frames.shape[1], frames.shape[2], frames.shape[0], p * m, total_pixels)
    x = frames.permute(0, 3, 1, 2)  # [T, 3, H, W]
    if (h, w) != tuple(x.shape[-2:]):  # a few frames at a time: a long video at full size stays uint8
        x = torch.cat([F.interpolate(c.float(), size=(h, w), mode="bicubic", align_corners=False, antialias=True)
                       .round().clamp(0, 255) for c in x.split(16)])
    x = x.float()
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1) / pre.rescale
    std = torch.tensor(pre.std).view(1, 3, 1, 1) / pre.rescale
    x = (x - mean) / std
    if x.shape[0] % tp:
        x = torch.cat([x, x[-1:].expand(tp - x.shape[0] % tp, -1, -1, -1)])
    gt, gh, gw = x.shape[0] // tp, h // p, w // p
    x = x.view(gt, tp, 3, gh // m, m, p, gw // m, m, p)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # t, merge row, merge col, row in window, col in window, C, tp, p, p
    return PreparedVideo(x.reshape(gt * gh * gw, 3 * tp * p * p), (gt, gh, gw), tp / fps)


def mrope_positions(tokens: torch.Tensor, video_id: int, videos: list[PreparedVideo], merge: int,
                    tokens_per_second: float) -> torch.Tensor:
    """3-D positions [3, L] of one unpadded prompt whose `video_id` runs hold `videos` in order
    (module docstring, step 5)."""
    is_video = (tokens == video_id).tolist()
    parts, start, at = [], 0, 0
    for video in videos:
        if True not in is_video[start:]:
            raise UniMoEError("the prompt holds fewer video tokens than videos")
        first = is_video.index(True, start)
        text = torch.arange(first - start).expand(3, -1) + at
        t, h, w = video.grid[0], video.grid[1] // merge, video.grid[2] // merge
        step = int(video.seconds_per_grid) * tokens_per_second
        grid = torch.stack(torch.meshgrid((torch.arange(t) * step).long(), torch.arange(h), torch.arange(w),
                                          indexing="ij")).flatten(1)  # [3, t·h·w]
        parts += [text, grid + at + first - start]
        at = int(parts[-1].max()) + 1
        start = first + t * h * w
    parts.append(torch.arange(len(is_video) - start).expand(3, -1) + at)
    return torch.cat(parts, dim=1)


class ReleasedVision:
    """The released vision tower with its preprocessing: `prepare()` frames, `features()` of them."""

    def __init__(self, tower: torch.nn.Module, pre: VideoPreprocessing, tokens_per_second: float,
                 total_pixels: int = TOTAL_PIXELS):
        self.tower, self.pre, self.tokens_per_second = tower.eval(), pre, tokens_per_second
        self.total_pixels = total_pixels

    @classmethod
    def load(cls, directory: str | Path, vision_config: dict, dtype: torch.dtype | None, device: str) -> "ReleasedVision":
        """The tower from `visual.*` of a released or converted folder and `vision_config` (config.json)."""
        from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel as Tower

        from unimoe_audio.model.released.api import iter_extras

        weights = {name.removeprefix("visual."): t for name, t in iter_extras(directory, VISUAL)}
        if not weights:
            raise UniMoEError(f"{directory} holds no vision tower (visual.* weights): this checkpoint cannot take a video")
        pre = VideoPreprocessing.from_folder(directory)
        config = Qwen2_5_VLVisionConfig(**vision_config)
        config._attn_implementation = "sdpa"
        mine = (config.patch_size, config.temporal_patch_size, config.spatial_merge_size)
        if mine != (pre.patch_size, pre.temporal_patch_size, pre.merge_size):
            raise UniMoEError(f"{directory}: the video preprocessor's patch / temporal patch / merge sizes "
                              f"{(pre.patch_size, pre.temporal_patch_size, pre.merge_size)} differ from vision_config's {mine}")
        conv = "patch_embed.proj.weight"
        if conv in weights and weights[conv].dim() == 4:  # the released Conv3D keeps [out, 3·tp, p, p]
            weights[conv] = weights[conv].unflatten(1, (config.in_channels, config.temporal_patch_size))
        with torch.device("meta"):
            tower = Tower(config)
        try:
            tower.load_state_dict(weights, assign=True)
        except RuntimeError as err:
            raise UniMoEError(f"{directory}: visual.* weights do not match vision_config: {str(err).splitlines()[0]}") from None
        buffers = dict(Tower(Qwen2_5_VLVisionConfig(**{**vision_config, "depth": 0})).named_buffers())
        for name, value in buffers.items():  # non-persistent (rotary) buffers: computed, never stored
            module, _, attr = name.rpartition(".")
            setattr(tower.get_submodule(module), attr, value)
        tower = tower.to(device=device, dtype=dtype if dtype is not None else next(iter(weights.values())).dtype)
        return cls(tower, pre, float(vision_config.get("tokens_per_second", 2)))

    def prepare(self, frames: torch.Tensor, fps: float) -> PreparedVideo:
        return prepare_video(frames, fps, self.pre, self.total_pixels)

    @torch.inference_mode()
    def features(self, video: PreparedVideo) -> torch.Tensor:
        """[num_tokens, D]: one feature per merge window, in the order of the video tokens."""
        param = next(self.tower.parameters())
        out = self.tower(video.pixels.to(param), grid_thw=torch.tensor([video.grid], device=param.device))
        return out if isinstance(out, torch.Tensor) else out.pooler_output  # transformers 4.x / 5.x
