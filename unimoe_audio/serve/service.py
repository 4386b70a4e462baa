"""What every front end (the HTTP routes, the web page) does with a generation request: check it
against the limits and the model's own front-end, queue it for the scheduler, and hand back its
audio. Every failure a caller can see is an ApiError, which each front end shows in its own way
(a JSON error, a Gradio error)."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Callable, Literal

import numpy as np
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from unimoe_audio.errors import UniMoEError
from unimoe_audio.model import GenerationConfig, Request, UniMoEAudio
from unimoe_audio.serve.errors import ApiError
from unimoe_audio.serve.limits import Limits
from unimoe_audio.serve.metrics import Metrics
from unimoe_audio.serve.scheduler import DONE, Job, QueueFull, Scheduler, ShuttingDown


@dataclass(frozen=True)
class ServeSettings:
    max_batch: int = 8  # requests decoded together
    batch_wait_ms: float = 10.0  # how long the oldest waiting request waits for company
    queue_size: int = 64  # requests waiting beyond the running batch; more get 429
    chunk_frames: int = 25  # frames per streamed chunk (0.5 s at 50 frames/s)
    limits: Limits = field(default_factory=Limits)


class Sampling(BaseModel):
    """The sampling fields every generation request takes (None: the model's default)."""

    model_config = ConfigDict(extra="forbid")
    temperature: float | None = Field(None, ge=0)
    top_k: int | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    guidance_scale: float | None = Field(None, ge=0)
    seed: int | None = None
    output: Literal["codes", "expected"] | None = None  # "expected": decode the mean prediction (spectral codec)


class ClientGone(Exception):
    """The client disconnected while its request was waiting or decoding."""


class Service:
    """The model behind one batching scheduler (`start()` / `stop()` with the server)."""

    def __init__(self, api: UniMoEAudio, settings: ServeSettings):
        self.api, self.settings, self.limits = api, settings, settings.limits
        self.metrics = Metrics()
        self.scheduler = Scheduler(api, self.metrics, settings.max_batch, settings.batch_wait_ms / 1000,
                                   settings.queue_size)

    def count(self, endpoint: str, outcome: str, started: float) -> None:
        """One finished request in the metrics (latency for successful ones)."""
        self.metrics.requests.labels(endpoint, outcome).inc()
        if outcome == "ok":
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)

    @staticmethod
    def outcome(err: BaseException) -> str:
        """The metrics outcome of a request that ended with `err`."""
        if isinstance(err, ClientGone):
            return "cancelled"
        if isinstance(err, ApiError):
            return "rejected" if err.status == 429 else "invalid" if err.status < 500 else "failed"
        return "invalid" if isinstance(err, UniMoEError) else "failed"

    @asynccontextmanager
    async def lifespan(self, _app):
        """The scheduler runs while the server does (a FastAPI lifespan)."""
        self.scheduler.start()
        yield
        self.scheduler.stop()  # uvicorn has finished the in-flight requests (or given up on them) by now

    def prepare(self, request: Request, sampling: Sampling, text_field: str, duration: float | None) -> GenerationConfig:
        """The request's lengths and guidance on the request, the rest of the settings as the config;
        the prompt is encoded once here so bad text fails now rather than in a batch."""
        if request.video is not None:  # as long as the video, or its first `duration` seconds
            duration = self.api.video_duration(request, duration)
        config = self.api.default_config(request.task, request.text, request.language or "en", duration)
        given = dict(temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p, seed=sampling.seed,
                     output=sampling.output)
        config = replace(config, **{k: v for k, v in given.items() if v is not None})
        try:
            self.api.check_output(config)
        except UniMoEError as err:
            raise ApiError.from_user_error(err, "output") from None
        request.max_frames, request.min_frames = config.max_frames, config.min_frames
        request.guidance_scale = sampling.guidance_scale
        try:
            self.api.generator.prompts.encode(request, True)
        except UniMoEError as err:
            raise ApiError.from_user_error(err, text_field) from None
        return config

    async def submit(self, build: Callable[[], Request], sampling: Sampling, text_field: str = "input",
                     duration: float | None = None, chunk_frames: int | None = None) -> Job:
        """Queue the request `build()` makes (built and checked off the event loop); its audio comes
        from the job as one clip, or in chunks of `chunk_frames`."""

        def checked() -> tuple[Request, GenerationConfig]:
            request = build()
            return request, self.prepare(request, sampling, text_field, duration)

        request, config = await run_in_threadpool(checked)
        job = Job(request, config, chunk_frames, asyncio.get_running_loop())
        try:
            self.scheduler.submit(job)
        except QueueFull as err:
            raise ApiError(429, str(err), headers={"Retry-After": str(err.retry_after)}) from None
        except ShuttingDown as err:
            raise ApiError(503, str(err)) from None
        return job

    @staticmethod
    def unwrap(item):
        """A job's item (a chunk or DONE); its error as an ApiError, its cancellation as ClientGone."""
        if isinstance(item, UniMoEError):
            raise ApiError.from_user_error(item)
        if isinstance(item, asyncio.CancelledError):
            raise ClientGone()
        if isinstance(item, ShuttingDown):
            raise ApiError(503, str(item))
        if isinstance(item, BaseException):
            raise ApiError(500, f"generation failed: {item}")
        return item

    async def clip(self, job: Job) -> np.ndarray:
        """The job's whole clip; if the caller is cancelled while waiting, so is the job."""
        try:
            waves = []
            while (item := self.unwrap(await job.get())) is not DONE:
                waves.append(item)
            return np.concatenate(waves)
        finally:
            job.cancel()
