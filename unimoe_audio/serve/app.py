"""The HTTP API: OpenAI's speech endpoint, voice cloning, music, voices, health and metrics.

    POST /v1/audio/speech   JSON {model, input, voice, response_format, stream, speed=1, ...}
    POST /v1/audio/clone    multipart {prompt_audio (file), prompt_text, input, language, ...}
    POST /v1/audio/music    JSON {caption, duration, response_format, stream, ...}, or multipart with a
                            `video` file and the same fields: music for that video (v2m; caption optional,
                            duration by default the video's)
    GET  /v1/voices, /health, /metrics (Prometheus), /docs (OpenAPI)

Each generation request is checked here (fields, limits, its text and voice prompt through the
model's own front-end, `service.py`), then queued for the scheduler; the response is the whole clip,
or with `stream` the audio as its frames complete (chunked transfer). The web page (`webui.py`) is
mounted at `/` and sends its requests through the same service, so they share batches with the API's.
"""

from __future__ import annotations

import asyncio
import io
import tempfile
import time
from pathlib import Path
from typing import Literal

import numpy as np

from fastapi import FastAPI, Form, Request as HttpRequest, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from pydantic import Field, ValidationError
from starlette.datastructures import UploadFile as StarletteUpload

from unimoe_audio import __version__
from unimoe_audio.codec import load_audio
from unimoe_audio.errors import UniMoEError
from unimoe_audio.model import UniMoEAudio
from unimoe_audio.serve import formats, webui
from unimoe_audio.serve.errors import ApiError, validation_error
from unimoe_audio.serve.scheduler import DONE, Job
from unimoe_audio.serve.service import ClientGone, Sampling, ServeSettings, Service

DISCONNECT_POLL = 0.1  # seconds between checks that a waiting client is still there
FORM_OVERHEAD = 64 * 2 ** 10  # multipart bytes around the uploaded file and the text fields
UPLOADS = {"/v1/audio/clone": "prompt_audio", "/v1/audio/music": "video"}  # endpoints taking a file, and its field


class Output(Sampling):
    """Output and sampling fields every generation endpoint takes (defaults: the model's)."""

    response_format: str = Field("wav", description="wav, flac or pcm (16-bit mono at the X-Sample-Rate header's rate)")
    stream: bool = Field(False, description="send audio as its frames complete (wav or pcm)")


class SpeechBody(Output):
    model: str = Field(description="accepted and ignored: the server runs one model")
    input: str
    voice: str = Field(description="a built-in speaker (GET /v1/voices)")
    language: Literal["en", "zh"] | None = Field(None, description="default: zh when the input has Chinese characters")
    speed: float = Field(1.0, description="only 1 is supported")
    instructions: str | None = Field(None, description="not supported")
    stream_format: str = Field("audio", description="only audio is supported")


class MusicBody(Output):
    model: str | None = None
    caption: str
    duration: float = 10.0


class VideoMusicForm(Output):
    """/v1/audio/music as multipart: the music for an uploaded video."""

    model: str | None = None
    caption: str = ""
    duration: float | None = None  # default: the video's length


class CloneForm(Output):
    prompt_audio: UploadFile = Field(description="the voice to clone: any format libsndfile reads, 0.5–20 s")
    input: str
    prompt_text: str = Field(description="the transcript of prompt_audio")
    language: Literal["en", "zh"] | None = None


def language_of(text: str) -> str:
    """OpenAI's speech API has no language field: Chinese characters mean Mandarin."""
    return "zh" if any("\u4e00" <= ch <= "\u9fff" for ch in text) else "en"


class UploadLimit:
    """ASGI middleware: an upload announced larger than the limit is refused before it is read."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        field = UPLOADS.get(scope["path"]) if scope["type"] == "http" else None
        if field is not None:
            size = dict(scope["headers"]).get(b"content-length")
            if size is not None and size.isdigit() and int(size) > self.max_bytes + FORM_OVERHEAD:
                response = ApiError(413, f"the upload is {int(size)} bytes; {field} may have at most "
                                         f"{self.max_bytes}", field).response()
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def create_app(api: UniMoEAudio, settings: ServeSettings = ServeSettings(), name: str = "unimoe-audio") -> FastAPI:
    service = Service(api, settings)
    scheduler, metrics, limits, rate = service.scheduler, service.metrics, settings.limits, api.sample_rate

    app = FastAPI(title="UniMoE-Audio", version=__version__, lifespan=service.lifespan,
                  description="Speech (built-in voices, voice cloning) and music from one model; "
                              "POST /v1/audio/speech is compatible with OpenAI's speech endpoint.")
    app.add_middleware(UploadLimit, max_bytes=limits.max_upload_bytes)
    app.state.scheduler, app.state.metrics = scheduler, metrics

    count = service.count

    def endpoint_of(http: HttpRequest) -> str:
        return http.url.path.rsplit("/", 1)[-1]

    def count_error(http: HttpRequest, err: ApiError) -> None:
        if http.url.path.startswith("/v1/audio/"):
            count(endpoint_of(http), service.outcome(err), 0.0)

    @app.exception_handler(ApiError)
    async def _api_error(http: HttpRequest, err: ApiError):
        count_error(http, err)
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(http: HttpRequest, err: RequestValidationError):
        error = validation_error(err)
        count_error(http, error)
        return error.response()

    def output_format(body: Output) -> str:
        if body.response_format not in formats.MEDIA_TYPES:
            raise ApiError(400, f"response_format {body.response_format!r} is not supported; use one of "
                                f"{', '.join(formats.MEDIA_TYPES)}", "response_format")
        if body.stream and body.response_format not in formats.STREAMABLE:
            raise ApiError(400, f"streaming sends {' or '.join(formats.STREAMABLE)}, not {body.response_format}",
                           "response_format")
        return body.response_format

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
        return service.unwrap(getter.result())

    async def generate(endpoint: str, http: HttpRequest, build, body: Output, text_field: str = "input",
                       duration: float | None = None):
        """Queue the request `build()` makes and answer with its audio (whole or streamed)."""
        started = time.perf_counter()
        fmt = output_format(body)
        sampling = Sampling(**body.model_dump(include=set(Sampling.model_fields)))
        job = await service.submit(build, sampling, text_field, duration, settings.chunk_frames if body.stream else None)
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

        def build():
            try:
                wave = load_audio(io.BytesIO(data), name=form.prompt_audio.filename or "prompt_audio")
                return api.request("clone", text, language, prompt_audio=wave, prompt_text=prompt_text)
            except UniMoEError as err:
                raise ApiError.from_user_error(err, "prompt_audio") from None

        return await generate("clone", http, build, form)

    def parsed(model, data):
        try:
            return model.model_validate(data)
        except ValidationError as err:
            raise RequestValidationError(err.errors()) from None

    @app.post("/v1/audio/music", tags=["audio"], response_class=Response,
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": MusicBody.model_json_schema()},
                  "multipart/form-data": {"schema": {**VideoMusicForm.model_json_schema(), "required": ["video"]}}}}})
    async def music(http: HttpRequest):
        """Music from a caption, exactly `duration` seconds long (JSON); or, as multipart with a
        `video` file (any format FFmpeg reads), music for that video, as long as the video unless
        `duration` is given."""
        if not http.headers.get("content-type", "").startswith("multipart/form-data"):
            try:
                data = await http.json()
            except ValueError:
                raise ApiError(422, "the body must be JSON (or multipart with a video file)") from None
            body = parsed(MusicBody, data)
            caption, duration = limits.text(body.caption, "caption"), limits.duration(body.duration)
            return await generate("music", http, lambda: api.request("t2m", caption=caption), body, "caption", duration)
        form = await http.form()
        upload = form.get("video")
        if not isinstance(upload, StarletteUpload):
            raise ApiError(422, "video: a video file is required in a multipart music request", "video")
        body = parsed(VideoMusicForm, {k: v for k, v in form.items() if k != "video"})
        caption = body.caption if not body.caption.strip() else limits.text(body.caption, "caption")
        duration = None if body.duration is None else limits.duration(body.duration)
        data = await upload.read()
        limits.upload(len(data), "video")

        def build():
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / ("video" + Path(upload.filename or "video.mp4").suffix)
                path.write_bytes(data)
                try:
                    request = api.request("v2m", caption=caption, video=path)
                except UniMoEError as err:
                    raise ApiError.from_user_error(err, "video") from None
            if duration is None:
                limits.duration(api.video_seconds(request), "video")
            return request

        return await generate("music", http, build, body, "caption", duration)

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

    return webui.mount(app, service)
