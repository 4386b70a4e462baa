"""`UniMoEAudio`: model + text front-end + codec behind `tts()` / `music()`, saved as one directory.

    <dir>/config.json         {"model_type": "unimoe-audio", ...UniMoEAudioConfig}
    <dir>/model.safetensors   transformer weights (no pickle)
    <dir>/frontend.json       the text front-end's symbols and speakers
    <dir>/codec/              the codec the model's tokens come from (its own config + weights)
    <dir>/generation_config.json  optional: the model's own sampling defaults per task, e.g.
                              {"tts": {"temperature": 0, "output": "expected"}} (`default_config`)
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from unimoe_audio.codec import Codec, DelayPattern, load_audio, load_codec, mono
from unimoe_audio.data import TASKS
from unimoe_audio.errors import UniMoEError
from unimoe_audio.io import atomic_path, read_config, write_json
from unimoe_audio.model.config import UniMoEAudioConfig
from unimoe_audio.model.frontend import TextFrontend
from unimoe_audio.model.generate import GenerationConfig, Generator, PromptEncoder
from unimoe_audio.model.sequence import FrontendPrompts, Request
from unimoe_audio.model.transformer import UniMoEAudioModel
from unimoe_audio.video import read_video

MODEL_TYPE = "unimoe-audio"
SHIPPED = Path(__file__).resolve().parents[1] / "weights"  # models that ship inside the package, by name
DEFAULT_MODEL = "pretrained"
SECONDS_PER_WORD = 0.5  # generous upper bound on speech length: per word / 3 Mandarin characters
GENERATION_FILE = "generation_config.json"
SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "guidance_scale", "output")  # what a model's defaults may set


def model_directory(model: str | Path) -> Path:
    """The directory of a model: `model` itself if it exists, else the shipped model of that name."""
    path = Path(model)
    if path.exists():
        return path
    if (SHIPPED / str(model)).is_dir():
        return SHIPPED / str(model)
    shipped = sorted(d.name for d in SHIPPED.iterdir() if d.is_dir()) if SHIPPED.is_dir() else []
    if not shipped and str(model) == DEFAULT_MODEL:
        raise UniMoEError("this version ships no trained model yet (docs/pretrained.md); give a model directory "
                          "(--model DIR), e.g. runs/curriculum-tiny/joint/model after `unimoe-audio quickstart`")
    raise UniMoEError(f"no model at {path}, and no shipped model of that name (shipped: {', '.join(shipped) or 'none'})")


def save_model(directory: str | Path, model: UniMoEAudioModel, frontend: TextFrontend,
               dtype: torch.dtype | None = None, generation: dict[str, dict] | None = None) -> Path:
    """Config, front-end, weights (floating-point ones stored as `dtype` if given, e.g. float16;
    `load_model` reads them back into the model's float32) and the sampling defaults per task, if any."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(dtype if dtype is not None and v.is_floating_point() else v.dtype).contiguous().cpu()
             for k, v in model.state_dict().items()}
    with atomic_path(directory / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    frontend.save(directory / "frontend.json")
    write_json(directory / "config.json", {"model_type": MODEL_TYPE, **model.config.to_dict()})
    if generation:
        write_json(directory / GENERATION_FILE, generation)
    return directory


def load_model(directory: str | Path, device: str = "cpu") -> tuple[UniMoEAudioModel, TextFrontend]:
    directory = model_directory(directory)
    raw = read_config(directory)
    if raw.pop("model_type", None) != MODEL_TYPE:
        raise UniMoEError(f"{directory} does not hold a UniMoE-Audio model (model_type is not {MODEL_TYPE!r})")
    model = UniMoEAudioModel(UniMoEAudioConfig.from_dict(raw))
    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise UniMoEError(f"no weights at {weights}")
    try:
        model.load_state_dict(load_file(str(weights)))
    except RuntimeError as err:
        raise UniMoEError(f"{weights} does not match {directory / 'config.json'}: {str(err).splitlines()[0]}") from None
    return model.to(device).eval(), TextFrontend.load(directory / "frontend.json")


def read_generation_defaults(directory: str | Path) -> dict[str, dict]:
    """A model directory's sampling defaults per task ({} without `generation_config.json`),
    checked: known tasks, known fields, values `GenerationConfig` accepts."""
    path = Path(directory) / GENERATION_FILE
    if not path.is_file():
        return {}
    return check_generation_defaults(read_config(directory, "generation defaults", GENERATION_FILE), str(path))


def check_generation_defaults(raw, where: str) -> dict[str, dict]:
    """`raw`, if it is sampling defaults per task: known tasks, known fields, values `GenerationConfig`
    accepts; else an error naming `where` they come from."""
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise UniMoEError(f"{where} must map tasks to settings, e.g. {{\"tts\": {{\"temperature\": 0}}}}")
    for task, settings in raw.items():
        if task not in TASKS:
            raise UniMoEError(f"{where}: unknown task {task!r} (tasks: {', '.join(TASKS)})")
        unknown = sorted(set(settings) - set(SAMPLING_FIELDS))
        if unknown:
            raise UniMoEError(f"{where}: unknown settings {unknown} for {task} (known: {', '.join(SAMPLING_FIELDS)})")
        GenerationConfig(**settings)  # the values themselves
    return raw


PROMPT_SECONDS = (0.5, 20.0)  # a voice prompt shorter than this says too little, longer costs positions


def check_prompt(wave: np.ndarray, rate: int) -> None:
    seconds = wave.shape[-1] / rate
    if not PROMPT_SECONDS[0] <= seconds <= PROMPT_SECONDS[1]:
        raise UniMoEError(f"the voice prompt is {seconds:.2f} s long; give {PROMPT_SECONDS[0]}–{PROMPT_SECONDS[1]} s of speech")
    if float(np.sqrt(np.mean(np.square(wave)))) < 1e-4:
        raise UniMoEError("the voice prompt is silent")


def _wave_and_rate(prompt_audio) -> tuple[np.ndarray, int]:
    """A (wave, sample_rate) pair as given by soundfile or torchaudio -> mono [T] and its rate."""
    if not isinstance(prompt_audio, (tuple, list)) or len(prompt_audio) != 2:
        raise UniMoEError("prompt_audio must be a path or a (wave, sample_rate) pair")
    wave, rate = prompt_audio
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise UniMoEError(f"the sample rate of prompt_audio must be a positive integer, got {rate!r}")
    return mono(wave), int(rate)


class UniMoEAudio:
    """Generate speech and music: `UniMoEAudio.from_pretrained(path).tts("Hello.", language="en", speaker=...)`."""

    def __init__(self, model: UniMoEAudioModel, frontend: TextFrontend | None, codec: Codec,
                 prompts: PromptEncoder | None = None, generation: dict[str, dict] | None = None):
        if codec.num_codebooks != model.config.num_codebooks or codec.codebook_size != model.config.codebook_size:
            raise UniMoEError(f"codec has {codec.num_codebooks}×{codec.codebook_size} codes, the model expects "
                              f"{model.config.num_codebooks}×{model.config.codebook_size}")
        self.model, self.frontend, self.codec = model.eval(), frontend, codec
        self.generation = generation or {}  # sampling defaults per task (`default_config`)
        pattern = DelayPattern(model.config.delays, model.config.codebook_size)
        self.generator = Generator(model, prompts or FrontendPrompts(frontend, pattern, model.config.vision))

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def speakers(self) -> list[str]:
        return self.frontend.speakers if self.frontend is not None else []

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu", dtype: torch.dtype | None = None) -> "UniMoEAudio":
        """A model saved by `save_pretrained`, a released checkpoint folder or one converted from it,
        or a shipped model by name (`"pretrained"`, the default model); `dtype`: the weights' dtype
        for released folders (their stored dtype by default)."""
        from unimoe_audio.model.released import ReleasedUniMoEAudio, is_released_or_converted

        directory = model_directory(directory)
        if is_released_or_converted(directory):
            return ReleasedUniMoEAudio.load(directory, device, dtype)
        model, frontend = load_model(directory, device)
        if not (Path(directory) / "codec").is_dir():
            raise UniMoEError(f"{directory} has no codec/ directory")
        return cls(model, frontend, load_codec(Path(directory) / "codec"),
                   generation=read_generation_defaults(directory))

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        """The model directory; `dtype` (e.g. torch.float16) halves the weights' storage."""
        save_model(directory, self.model, self.frontend, dtype, self.generation)
        self.codec.save_pretrained(Path(directory) / "codec")
        return Path(directory)

    def request(self, task: str, text: str = "", language: str | None = None, speaker: str | None = None,
                caption: str = "", prompt_audio=None, prompt_text: str = "", video=None,
                video_fps: float | None = None) -> Request:
        """A `Request`; `prompt_audio` is a path or (wave, sample_rate) and is encoded with the codec;
        `video` (v2m) is a path, read as `video_format` says, or frames [T, H, W, 3] uint8 sampled at
        `video_fps` (None: the model's own rate)."""
        prompt_codes = None
        if prompt_audio is not None:
            if isinstance(prompt_audio, (str, Path)):
                wave, rate = load_audio(prompt_audio)
            else:
                wave, rate = _wave_and_rate(prompt_audio)
            check_prompt(wave, rate)
            prompt_codes = self.codec.encode(wave, rate)[0]
        if video is not None:
            video_fps, size, longest = self.video_format(video_fps)
            if isinstance(video, (str, Path)):
                video = read_video(video, video_fps, size, longest)[0]
        return Request(task=task, text=text, language=language, speaker=speaker, caption=caption,
                       prompt_text=prompt_text, prompt_codes=prompt_codes, video=video, video_fps=video_fps)

    @property
    def takes_video(self) -> bool:
        """Whether this model makes music for a video (task v2m): it has a vision encoder."""
        return self.model.config.vision is not None

    def video_format(self, fps: float | None = None) -> tuple[float, int | None, float]:
        """How this model reads a video: (frames per second, frame side or None for the video's own
        size, longest video in seconds); `fps` asks for another rate where the model allows one."""
        vision = self.model.config.vision
        if not self.takes_video:
            raise UniMoEError("this model has no vision encoder, so it cannot take a video; use a model trained with "
                              "video-to-music items (task v2m)")
        if fps not in (None, vision.fps):
            raise UniMoEError(f"this model reads video at {vision.fps:g} frames/s only; leave video_fps unset")
        return vision.fps, vision.size, vision.max_seconds

    def generate(self, requests: list[Request], config: GenerationConfig | None = None,
                 progress: bool = False) -> list[np.ndarray]:
        """Waveforms (float32 at `sample_rate`), one per request, generated in one batch."""
        config = config or GenerationConfig()
        self.check_output(config)
        bar = tqdm(total=config.max_frames + 1 + self.generator.pattern.max_delay, desc="generating", unit="frame",
                   disable=not progress)
        with bar:
            codes = self.generator.run(requests, config, bar)
        return self.decode_all(codes)

    def check_output(self, config: GenerationConfig) -> None:
        """Refuses output "expected" where the codec cannot decode it."""
        if config.output == "expected" and not self.codec.decodes_expected:
            raise UniMoEError(f"output 'expected' needs a codec that decodes distributions over its codes; "
                              f"this model's {self.codec.codec_type} codec decodes codes only (use output 'codes')")

    def decode(self, codes: torch.Tensor) -> np.ndarray:
        """Aligned codes [K, T] (or distributions over them [K, T, C]) -> float32 waveform at `sample_rate`."""
        return self.decode_all([codes])[0]

    def decode_all(self, codes: list[torch.Tensor]) -> list[np.ndarray]:
        """Aligned codes [K, T_i], or distributions over them [K, T_i, C] (`Generator.run` with
        output "expected"), -> float32 waveforms; those of equal length and kind are decoded in one
        codec call (codecs decode a row alike alone or in a batch, so this only saves time)."""
        waves = [np.zeros(0, dtype=np.float32) for _ in codes]
        groups: dict[tuple[int, bool], list[int]] = {}
        for i, c in enumerate(codes):
            if c.shape[1]:
                groups.setdefault((c.shape[1], c.is_floating_point()), []).append(i)
        for (_, expected), rows in groups.items():
            decode = self.codec.decode_expected if expected else self.codec.decode
            for i, wave in zip(rows, decode(torch.stack([codes[i] for i in rows]))):
                waves[i] = wave.numpy().astype(np.float32)
        return waves

    def default_config(self, task: str, text: str = "", language: str = "en",
                       duration: float | None = None) -> GenerationConfig:
        """Generation settings when none are given: the model's own sampling defaults for `task`
        (`generation_config.json`, else `GenerationConfig`'s), speech up to `speech_budget`, music of
        exactly `duration` seconds (10 s by default)."""
        sampling = self.generation.get(task, {})
        if task in ("t2m", "v2m"):
            frames = self.music_frames(10.0 if duration is None else duration)
            return GenerationConfig(max_frames=frames, min_frames=frames, **sampling)
        return GenerationConfig(max_frames=self.speech_budget(text, language), **sampling)

    def video_seconds(self, request: Request) -> float:
        """How long the video of a `request` made by `request()` lasts."""
        return len(request.video) / request.video_fps

    def video_duration(self, request: Request, duration: float | None = None) -> float:
        """How long the music for a v2m `request` lasts: as long as its video, or `duration` seconds
        and then for the video's first `duration` seconds (the request keeps only the frames shown)."""
        if duration is None:
            return self.video_seconds(request)
        shown = math.ceil(self.music_frames(duration) / self.codec.frame_rate * request.video_fps)
        request.video = request.video[:max(1, shown)]
        return duration

    def music_frames(self, duration: float) -> int:
        if not math.isfinite(duration) or duration <= 0:
            raise UniMoEError(f"duration must be a positive number of seconds, got {duration}")
        return max(1, round(duration * self.codec.frame_rate))

    def tts(self, text: str, language: str = "en", speaker: str | None = None, prompt_audio=None,
            prompt_text: str = "", config: GenerationConfig | None = None, progress: bool = False):
        """Speech in a built-in `speaker`, or cloning the voice of `prompt_audio` (with its transcript).
        A given `config` is capped at the speech budget of `text` (`speech_budget`)."""
        if (speaker is None) == (prompt_audio is None):
            raise UniMoEError("give either speaker= (a built-in voice) or prompt_audio= and prompt_text= (cloning)")
        task = "tts" if prompt_audio is None else "clone"
        request = self.request(task, text, language, speaker, prompt_audio=prompt_audio, prompt_text=prompt_text)
        budget = self.default_config(task, text, language)
        if config is None:
            config = budget
        else:  # a given config still keeps to the speech budget (or the released limit)
            longest = min(config.max_frames, budget.max_frames)
            config = replace(config, max_frames=longest, min_frames=min(config.min_frames, longest))
        return self.generate([request], config, progress)[0], self.sample_rate

    def music(self, caption: str = "", duration: float | None = None, config: GenerationConfig | None = None,
              progress: bool = False, video=None, video_fps: float | None = None):
        """Music for `caption`: `duration` seconds (10 s by default), also when a `config` is given.
        With `video` (a path, or frames sampled at `video_fps`, as `request` takes them) it is music
        for that video (video-to-music; the caption may then be empty), as long as the video unless
        `duration` says (then for the video's first `duration` seconds)."""
        if video is None and (not caption or not caption.strip()):
            raise UniMoEError("the music caption is empty")
        request = self.request("v2m" if video is not None else "t2m", caption=caption or "", video=video,
                               video_fps=video_fps)
        if video is not None:
            duration = self.video_duration(request, duration)
        if config is None:
            config = self.default_config(request.task, duration=duration)
        elif duration is not None:  # `duration` fixes the length whatever the config says
            frames = self.music_frames(duration)
            config = replace(config, max_frames=frames, min_frames=frames)
        return self.generate([request], config, progress)[0], self.sample_rate

    def speech_budget(self, text: str, language: str) -> int:
        """Maximum frames for speaking `text`."""
        units = len(text) / 3 if language == "zh" else len(text.split())
        return int(min(self.model.config.max_positions // 2, SECONDS_PER_WORD * self.codec.frame_rate * (units + 2)))

    def stream(self, request: Request, config: GenerationConfig | None = None, chunk_frames: int = 25,
               context_frames: int = 8) -> Iterator[np.ndarray]:
        """Yields audio chunks as their frames complete (decoded with a little left context)."""
        config = config or GenerationConfig()
        self.check_output(config)
        audio = AudioChunks(self, chunk_frames, context_frames)
        mine = []  # output "expected": this request's distributions, one [K, C] per step
        for frames, eos_at, probs in self.generator.steps([request], config):
            if probs is not None:
                mine.append(probs[-1][0])
            wave = audio.push(frames[0], int(eos_at[0]), None if probs is None else mine)
            if wave is not None:
                yield wave
            if audio.finished:
                return


class AudioChunks:
    """One request's audio from the generator's growing delayed frames, a chunk whenever
    `chunk_frames` more frames are complete (decoded with `context_frames` of left context) and
    the rest once the request has ended; with `chunk_frames=None`, the whole clip, decoded at once,
    when it ends (what `generate()` returns for the same codes). `push()` does it for one request;
    a batch's rows hand `ready()`'s codes to one `decode_all` and each wave back to `chunk()`."""

    def __init__(self, api: UniMoEAudio, chunk_frames: int | None = 25, context_frames: int = 8):
        self.api, self.chunk_frames, self.context_frames = api, chunk_frames, context_frames
        self.hop = round(api.codec.sample_rate / api.codec.frame_rate)
        self.done = self.emitted = 0  # frames decoded, samples returned (frame j is centred on sample j·hop)
        self.window = (0, 0)  # the frames [start, stop) of the codes `ready()` returned last
        self.finished = False  # the request has ended
        self.drained = False  # ... and its last audio has been handed out

    def push(self, frames: torch.Tensor, eos_at: int, probs: torch.Tensor | None = None) -> np.ndarray | None:
        """The next chunk (decoded), or None; arguments as `ready()` takes them."""
        codes = self.ready(frames, eos_at, probs)
        return None if codes is None else self.chunk(self.api.decode(codes))

    def ready(self, frames: torch.Tensor, eos_at: int, probs: torch.Tensor | None = None) -> torch.Tensor | None:
        """The aligned codes [K, t] (on the CPU) to decode for the next chunk, or None while none is
        due; frames: this request's delayed frames so far [K, s]; eos_at: its EOS step, -1 = not yet;
        probs (output "expected"): its distributions so far, one [K, C] per step; the chunk's
        distributions [K, t, C] are returned instead of codes."""
        pattern = self.api.generator.pattern
        ready = frames.shape[-1] - pattern.max_delay  # aligned frames whose every codebook is known
        available = min(ready, eos_at) if eos_at >= 0 else ready
        self.finished = eos_at >= 0 and ready >= eos_at
        if self.chunk_frames is None:  # the whole clip, once, when it ends (empty if it has no frames)
            due, start = self.finished and not self.drained, 0
        else:
            due = available - self.done >= self.chunk_frames or (self.finished and available > self.done)
            start = max(0, self.done - self.context_frames)
        if not due:
            return None
        self.window = (start, available)
        stop = available + pattern.max_delay  # the delayed steps that hold aligned frames [start, available)
        steps = frames[:, start:stop] if probs is None else torch.stack(probs[start:stop], dim=1)
        return pattern.revert(steps[None])[0].cpu()

    def chunk(self, wave: np.ndarray) -> np.ndarray:
        """The new audio in `wave`, the waveform of the codes `ready()` returned last (samples
        [start·hop, (stop-1)·hop) of the clip)."""
        start, self.done = self.window
        chunk = wave[self.emitted - start * self.hop:]
        self.emitted = start * self.hop + len(wave)
        self.drained = self.finished
        return chunk
