"""Running a released checkpoint: `ReleasedUniMoEAudio` (load, generate) and `convert_released`.

Two folder kinds load here:
- the released folder itself (config.json model_type "uni_audio_rvq_qwen2_5vl_moe", read in place,
  never modified), codec from `dac_model/weights_16khz.pth`;
- a converted folder (`convert_released`): config.json {"model_type": "unimoe-audio",
  "released": {...}, ...UniMoEAudioConfig}, project-named weights in shards + index (stored
  dtype kept), `lm_head.weight` and `visual.*` kept under their released names in the same shards,
  the tokenizer files, and `codec/` (the DAC as a transformers DacModel folder).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Iterator

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from unimoe_audio.codec import Codec, DelayPattern, load_dac
from unimoe_audio.errors import UniMoEError
from unimoe_audio.io import atomic_path, read_config, write_json
from unimoe_audio.model.config import UniMoEAudioConfig
from unimoe_audio.model.generate import GenerationConfig
from unimoe_audio.model.pipeline import MODEL_TYPE, UniMoEAudio
from unimoe_audio.model.released.checkpoint import (EXTRA, INDEX, ReleasedSpec, is_released, iter_released,
                                                    load_released_model, released_config,
                                                    weight_files)
from unimoe_audio.model.released.prompts import ReleasedPrompts, check_tokenizer_files, load_tokenizer
from unimoe_audio.model.released.vision import MAX_VIDEO_SECONDS, VIDEO_FPS, ReleasedVision
from unimoe_audio.model.transformer import UniMoEAudioModel

# The released demo's limits: 1000 decode steps, at least 100 frames. The last 19 steps (the
# largest delay + the BOS frame) only finish the delayed codebooks, so at most 981 frames.
MAX_TOKENS, MIN_TOKENS = 1000, 100
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "vocab.json", "merges.txt", "special_tokens_map.json",
                   "added_tokens.json", "chat_template.jinja", "chat_template.json", "preprocessor_config.json",
                   "video_preprocessor_config.json", "generation_config.json")
SHARD_BYTES = 2 << 30  # converted shards of at most ~2 GiB: conversion holds one shard at a time


def is_released_or_converted(directory: str | Path) -> bool:
    if is_released(directory):
        return True
    path = Path(directory) / "config.json"
    try:
        raw = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return False
    return raw.get("model_type") == MODEL_TYPE and "released" in raw


def released_limits(max_delay: int) -> dict:
    return dict(max_frames=MAX_TOKENS - max_delay - 1, min_frames=MIN_TOKENS)


class ReleasedUniMoEAudio(UniMoEAudio):
    """The released checkpoint behind `tts()` / `music()`, with the released prompts and decoding
    by default (`GenerationConfig(decoding="released")`). Speech always clones a voice prompt;
    music may follow a video (task v2m, `music(caption, video=...)`), through the checkpoint's
    vision tower, read from `directory` on first use."""

    def __init__(self, model: UniMoEAudioModel, tokenizer, spec: ReleasedSpec, codec: Codec,
                 directory: str | Path | None = None):
        pattern = DelayPattern(model.config.delays, model.config.codebook_size)
        self.tokenizer, self.spec, self.directory = tokenizer, spec, directory
        self._vision: ReleasedVision | None = None
        super().__init__(model, None, codec, ReleasedPrompts(tokenizer, spec, pattern, self.vision))

    @property
    def takes_video(self) -> bool:
        """Whether the folder has what a video needs: vision tower settings, video tokens, M-RoPE."""
        return None not in (self.directory, self.spec.vision_config, self.spec.video_ids, self.model.config.rope_sections)

    def vision(self) -> ReleasedVision:
        """The vision tower (loaded on first use, in the transformer's dtype and device)."""
        if self._vision is None:
            if not self.takes_video:
                raise UniMoEError("this checkpoint takes no video: it has no vision tower (a folder converted before "
                                  "video support needs converting again)")
            param = next(self.model.parameters())
            self._vision = ReleasedVision.load(self.directory, self.spec.vision_config, param.dtype, param.device)
        return self._vision

    def video_format(self, fps: float | None = None) -> tuple[float, int | None, float]:
        """Any rate (1 frame/s by default, as released), frames at the video's own size (the tower's
        preprocessing resizes them), at most 30 s; a checkpoint without a vision tower refuses here."""
        self.vision()
        return VIDEO_FPS if fps is None else fps, None, MAX_VIDEO_SECONDS

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu", dtype: torch.dtype | None = None) -> "ReleasedUniMoEAudio":
        directory = Path(directory)
        raw = read_config(directory)
        if is_released(directory):
            config, spec = released_config(raw, str(directory))
            check_tokenizer_files(directory)
            codec = load_dac(directory / "dac_model")
            model = load_released_model(directory, config, dtype, device)
        else:
            config, spec = converted_config(raw)
            check_tokenizer_files(directory)
            codec = load_dac(directory / "codec")
            model = load_converted_model(directory, config, dtype, device)
        return cls(model, load_tokenizer(directory, spec), spec, codec, directory)

    def default_config(self, task: str, text: str = "", language: str = "en",
                       duration: float | None = None) -> GenerationConfig:
        """The released settings (guidance 10 music / 1 speech, top-k 45, temperature 1, EOS factor
        0.6 music / 1 speech, 100 to 981 frames); `duration` asks for exactly that much music instead
        (`music()` asks for a video's length)."""
        limits = released_limits(self.generator.pattern.max_delay)
        if task in ("t2m", "v2m") and duration is not None:
            frames = self.music_frames(duration)
            limits = dict(max_frames=frames, min_frames=frames)
        return GenerationConfig(**limits, decoding="released", temperature=1.0, top_k=45, top_p=1.0)

    def save_pretrained(self, directory: str | Path) -> Path:
        raise UniMoEError("a released model is saved by converting its folder: unimoe-audio convert --from-released DIR --out DIR2")


def converted_config(raw: dict) -> tuple[UniMoEAudioConfig, ReleasedSpec]:
    raw = dict(raw)
    raw.pop("model_type")
    released = raw.pop("released")
    video = released.get("video_ids")
    spec = ReleasedSpec(int(released["placeholder_id"]), tuple(released["codec_values"]),
                        tuple(video) if video else None, released.get("vision_config"))
    return UniMoEAudioConfig.from_dict(raw), spec


def load_converted_model(directory: Path, config: UniMoEAudioConfig, dtype: torch.dtype | None,
                         device: str) -> UniMoEAudioModel:
    files = weight_files(directory)
    state = {}
    for path in sorted(set(files.values())):
        with safe_open(str(path), "pt") as f:
            for name in f.keys():
                if not EXTRA.match(name):
                    tensor = f.get_tensor(name)
                    state[name] = tensor.to(dtype) if dtype is not None else tensor
    model = UniMoEAudioModel.empty(config)
    try:
        model.load_state_dict(state, assign=True)
    except RuntimeError as err:
        raise UniMoEError(f"{directory}: weights do not match config.json: {str(err).splitlines()[0]}") from None
    return model.to(device).eval()


def convert_released(source: str | Path, out: str | Path, dtype: torch.dtype | None = None) -> Path:
    """A released folder -> a converted folder (see the module docstring); `source` is only read.

    Tensors stream from one source shard at a time into output shards of at most SHARD_BYTES.
    """
    source, out = Path(source), Path(out)
    if out.resolve() == source.resolve():
        raise UniMoEError("--out must be a new folder: the released folder is never modified")
    config, spec = released_config(read_config(source), str(source))
    check_tokenizer_files(source)
    codec = load_dac(source / "dac_model")
    return write_converted(out, iter_released(source, config, dtype, extras=True), config, spec, source, codec)


def write_converted(out: Path, tensors: Iterable[tuple[str, torch.Tensor]], config: UniMoEAudioConfig,
                    spec: ReleasedSpec, source: Path, codec: Codec) -> Path:
    """A converted folder from (name, tensor) pairs (project names, plus lm_head / visual.* under
    their released names), the tokenizer files of `source` and `codec`; shards of at most SHARD_BYTES."""
    out.mkdir(parents=True, exist_ok=True)
    weight_map: dict[str, str] = {}
    buffer: dict[str, torch.Tensor] = {}

    def flush() -> None:
        if buffer:
            file = f"model-{len(set(weight_map.values())) + 1:05d}.safetensors"
            with atomic_path(out / file) as tmp:
                save_file(buffer, str(tmp), metadata={"format": "pt"})
            weight_map.update({name: file for name in buffer})
            buffer.clear()

    size = 0
    for name, tensor in tensors:
        buffer[name] = tensor.detach().contiguous().cpu()
        size += tensor.numel() * tensor.element_size()
        if size >= SHARD_BYTES:
            flush()
            size = 0
    flush()
    write_json(out / INDEX, {"metadata": {"source": str(source)}, "weight_map": dict(sorted(weight_map.items()))})
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
    codec.save_pretrained(out / "codec")
    write_json(out / "config.json", {"model_type": MODEL_TYPE, **config.to_dict(),
                                     "released": {**asdict(spec), "source": str(source)}})
    return out


def iter_extras(directory: str | Path, names: re.Pattern = EXTRA) -> Iterator[tuple[str, torch.Tensor]]:
    """lm_head.weight and visual.* (or those of them matching `names`) of a released or converted
    folder, unchanged (kept, never trained)."""
    files = weight_files(directory)
    for path in sorted({p for n, p in files.items() if EXTRA.match(n) and names.match(n)}):
        with safe_open(str(path), "pt") as f:
            for name in f.keys():
                if EXTRA.match(name) and names.match(name):
                    yield name, f.get_tensor(name)
