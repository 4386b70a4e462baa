"""The HTTP API: OpenAI's speech endpoint, voice cloning, music, voices, health and metrics.

    POST /v1/audio/speech   JSON {model, input, voice, response_format, stream, speed=1, ...}
    POST /v1/audio/clone    multipart {prompt_audio (file), prompt_text, input, language, ...}
    POST /v1/audio/music    JSON {caption, duration, response_format, stream, ...}
    GET  /v1/voices, /health, /metrics (Prometheus), /docs (OpenAPI)

Each generation request is checked here (fields, limits, its text and voice prompt through the
model's own front-end), then queued for the scheduler; the response is the whole clip, or with
`stream` the audio as its frames complete (chunked transfer).
"""

from __future__ import annotations

import asyncio
import io
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from fastapi import FastAPI, Form, Request as HttpRequest, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from unimoe_audio import __version__
from unimoe_audio.codec import load_audio
from unimoe_audio.errors import UniMoEError
from unimoe_audio.model import GenerationConfig, Request, UniMoEAudio
from unimoe_audio.serve import formats
from unimoe_audio.serve.errors import ApiError, validation_error
from unimoe_audio.serve.limits import Limits
from unimoe_audio.serve.metrics import Metrics
from unimoe_audio.serve.scheduler import DONE, Job, QueueFull, Scheduler, ShuttingDown

DISCONNECT_POLL = 0.1  # seconds between checks that a waiting client is still there
FORM_OVERHEAD = 64 * 2 ** 10  # multipart bytes around the uploaded file and the text fields


@dataclass(frozen=True)
class ServeSettings:
    max_batch: int = 8  # requests decoded together
    batch_wait_ms: float = 10.0  # how long the oldest waiting request waits for company
    queue_size: int = 64  # requests waiting beyond the running batch; more get 429
    chunk_frames: int = 25  # frames per streamed chunk (0.5 s at 50 frames/s)
    limits: Limits = field(default_factory=Limits)


class Sampling(BaseModel):
    """Output and sampling fields every generation endpoint takes (defaults: the model's)."""

    model_config = ConfigDict(extra="forbid")
    response_format: str = Field("wav", description="wav, flac or pcm (16-bit mono at the X-Sample-Rate header's rate)")
    stream: bool = Field(False, description="send audio as its frames complete (wav or pcm)")
    temperature: float | None = Field(None, ge=0)
    top_k: int | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    guidance_scale: float | None = Field(None, ge=0)
    seed: int | None = None


class SpeechBody(Sampling):
    model: str = Field(description="accepted and ignored: the server runs one model")
    input: str
    voice: str = Field(description="a built-in speaker (GET /v1/voices)")
    language: Literal["en", "zh"] | None = Field(None, description="default: zh when the input has Chinese characters")
    speed: float = Field(1.0, description="only 1 is supported")
    instructions: str | None = Field(None, description="not supported")
    stream_format: str = Field("audio", description="only audio is supported")


class MusicBody(Sampling):
    model: str | None = None
    caption: str
    duration: float = 10.0


class CloneForm(Sampling):
    prompt_audio: UploadFile = Field(description="the voice to clone: any format libsndfile reads, 0.5–20 s")
    input: str
    prompt_text: str = Field(description="the transcript of prompt_audio")
    language: Literal["en", "zh"] | None = None


def language_of(text: str) -> str:
    """OpenAI's speech API has no language field: Chinese characters mean Mandarin."""
    return "zh" if any("\u4e00" <= ch <= "\u9fff" for ch in text) else "en"


class ClientGone(Exception):
    """The client disconnected while its request was waiting or decoding."""


class UploadLimit:
    """ASGI middleware: a clone upload announced larger than the limit is refused before it is read."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/v1/audio/clone":
            size = dict(scope["headers"]).get(b"content-length")
            if size is not None and size.isdigit() and int(size) > self.max_bytes + FORM_OVERHEAD:
                response = ApiError(413, f"the upload is {int(size)} bytes; prompt_audio may have at most "
                                         f"{self.max_bytes}", "prompt_audio").response()
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def create_app(api: UniMoEAudio, settings: ServeSettings = ServeSettings(), name: str = "unimoe-audio") -> FastAPI:
    metrics = Metrics()
    scheduler = Scheduler(api, metrics, settings.max_batch, settings.batch_wait_ms / 1000, settings.queue_size)
    limits, rate = settings.limits, api.sample_rate

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        scheduler.start()
        yield
        scheduler.stop()  # uvicorn has finished the in-flight requests (or given up on them) by now

    app = FastAPI(title="UniMoE-Audio", version=__version__, lifespan=lifespan,
                  description="Speech (built-in voices, voice cloning) and music from one model; "
                              "POST /v1/audio/speech is compatible with OpenAI's speech endpoint.")
    app.add_middleware(UploadLimit, max_bytes=limits.max_upload_bytes)
    app.state.scheduler, app.state.metrics = scheduler, metrics

    def count(endpoint: str, outcome: str, started: float) -> None:
        metrics.requests.labels(endpoint, outcome).inc()
        if outcome == "ok":
            metrics.latency.labels(endpoint).observe(time.perf_counter() - started)

    def endpoint_of(http: HttpRequest) -> str:
        return http.url.path.rsplit("/", 1)[-1]

    def count_error(http: HttpRequest, err: ApiError) -> None:
        if http.url.path.startswith("/v1/audio/"):
            count(endpoint_of(http), "rejected" if err.status == 429 else "invalid" if err.status < 500 else "failed", 0.0)

    @app.exception_handler(ApiError)
    async def _api_error(http: HttpRequest, err: ApiError):
        count_error(http, err)
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(http: HttpRequest, err: RequestValidationError):
        error = validation_error(err)
        count_error(http, error)
        return error.response()

    def output_format(body: Sampling) -> str:
        if body.response_format not in formats.MEDIA_TYPES:
            raise ApiError(400, f"response_format {body.response_format!r} is not supported; use one of "
                                f"{', '.join(formats.MEDIA_TYPES)}", "response_format")
        if body.stream and body.response_format not in formats.STREAMABLE:
            raise ApiError(400, f"streaming sends {' or '.join(formats.STREAMABLE)}, not {body.response_format}",
                           "response_format")
        return body.response_format

    def prepare(request: Request, body: Sampling, text_field: str, duration: float | None) -> GenerationConfig:
        """The request's lengths and guidance on the request, the rest of the settings as the config;
        the prompt is encoded once here so bad text fails now rather than in a batch."""
        config = api.default_config(request.task, request.text, request.language or "en", duration)
        given = dict(temperature=body.temperature, top_k=body.top_k, top_p=body.top_p, seed=body.seed)
        config = replace(config, **{k: v for k, v in given.items() if v is not None})
        request.max_frames, request.min_frames = config.max_frames, config.min_frames
        request.guidance_scale = body.guidance_scale
        try:
            api.generator.prompts.encode(request, True)
        except UniMoEError as err:
            raise ApiError.from_user_error(err, text_field) from None
        return config

    async def next_item(job: Job, http: HttpRequest):
        """The job's next chunk or DONE; ApiError for a failed job, ClientGone when the client left."""
        getter = asyncio.ensure_future(job.get())
        try:
            while not (await asyncio.wait({getter}, timeout=DISCONNECT_POLL))[0]:
                if await http.is_disconnected():
                    job.cancel()
                    raise ClientGone()
        finally:
            getter.cancel()
        item = getter.result()
        if isinstance(item, UniMoEError):
            raise ApiError.from_user_error(item)
        if isinstance(item, asyncio.CancelledError):
            raise ClientGone()
        if isinstance(item, ShuttingDown):
            raise ApiError(503, str(item))
        if isinstance(item, BaseException):
            raise ApiError(500, f"generation failed: {item}")
        return item

    async def generate(endpoint: str, http: HttpRequest, build, body: Sampling, text_field: str = "input",
                       duration: float | None = None):
        """Queue the request `build()` makes and answer with its audio (whole or streamed)."""
        started = time.perf_counter()
        fmt = output_format(body)

        def checked() -> tuple[Request, GenerationConfig]:
            request = build()
            return request, prepare(request, body, text_field, duration)

        request, config = await run_in_threadpool(checked)
        job = Job(request, config, settings.chunk_frames if body.stream else None, asyncio.get_running_loop())
        try:
            scheduler.submit(job)
        except QueueFull as err:
            raise ApiError(429, str(err), headers={"Retry-After": str(err.retry_after)}) from None
        except ShuttingDown as err:
            raise ApiError(503, str(err)) from None
        headers = {"X-Sample-Rate": str(rate)}
        media_type = formats.MEDIA_TYPES[fmt]
        try:
            first = await next_item(job, http)
            if not body.stream:
                waves = [first]
                while (item := await next_item(job, http)) is not DONE:
                    waves.append(item)
        except ClientGone:
            count(endpoint, "cancelled", started)
            return Response(status_code=499)
        if not body.stream:
            count(endpoint, "ok", started)
            return Response(formats.encode(np.concatenate(waves), rate, fmt), media_type=media_type, headers=headers)
        metrics.first_chunk.observe(time.perf_counter() - started)

        async def chunks():
            outcome = "cancelled"
            try:
                yield formats.stream_header(rate, fmt)
                item = first
                while item is not DONE:
                    yield formats.encode(item, rate, "pcm")
                    item = await next_item(job, http)
                outcome = "ok"
            except ClientGone:
                pass
            except ApiError:
                outcome = "failed"
                raise  # the connection is dropped, so the client sees the audio is incomplete
            finally:
                job.cancel()
                count(endpoint, outcome, started)

        return StreamingResponse(chunks(), media_type=media_type, headers=headers)

    @app.post("/v1/audio/speech", tags=["audio"], response_class=Response,
              responses={200: {"content": {t: {} for t in formats.MEDIA_TYPES.values()}}})
    async def speech(body: SpeechBody, http: HttpRequest):
        """Text to speech in a built-in voice (OpenAI-compatible)."""
        for name, value, default in (("speed", body.speed, 1.0), ("instructions", body.instructions or None, None),
                                     ("stream_format", body.stream_format, "audio")):
            if value != default:
                raise ApiError(400, f"{name}={value!r} is not supported by this model", name)
        if body.voice not in api.speakers:
            voices = ", ".join(api.speakers) or "none (use /v1/audio/clone)"
            raise ApiError(400, f"unknown voice {body.voice!r}; this model's voices: {voices}", "voice")
        text = limits.text(body.input, "input")
        language = body.language or language_of(text)
        return await generate("speech", http, lambda: api.request("tts", text, language, body.voice), body)

    @app.post("/v1/audio/clone", tags=["audio"], response_class=Response)
    async def clone(http: HttpRequest, form: CloneForm = Form()):
        """Speech in the voice of an uploaded prompt (any format libsndfile reads, 0.5–20 s)."""
        text, prompt_text = limits.text(form.input, "input"), limits.text(form.prompt_text, "prompt_text")
        data = await form.prompt_audio.read()
        limits.upload(len(data), "prompt_audio")
        language = form.language or language_of(text)

        def build() -> Request:
            try:
                wave = load_audio(io.BytesIO(data), name=form.prompt_audio.filename or "prompt_audio")
                return api.request("clone", text, language, prompt_audio=wave, prompt_text=prompt_text)
            except UniMoEError as err:
                raise ApiError.from_user_error(err, "prompt_audio") from None

        return await generate("clone", http, build, form)

    @app.post("/v1/audio/music", tags=["audio"], response_class=Response)
    async def music(body: MusicBody, http: HttpRequest):
        """Music from a caption, exactly `duration` seconds long."""
        caption, duration = limits.text(body.caption, "caption"), limits.duration(body.duration)
        return await generate("music", http, lambda: api.request("t2m", caption=caption), body, "caption", duration)

    @app.get("/v1/voices", tags=["info"])
    async def voices():
        return {"voices": api.speakers, "languages": ["en", "zh"]}

    @app.get("/health", tags=["info"])
    async def health():
        return {"status": "ok", "model": name, "sample_rate": rate, "queue_depth": scheduler.depth}

    @app.get("/metrics", tags=["info"], response_class=Response)
    async def prometheus():
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/", include_in_schema=False)
    async def root():
        return RedirectResponse("/docs")

    return app
