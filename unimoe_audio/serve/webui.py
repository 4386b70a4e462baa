"""The web page (Gradio): speech in a built-in voice, voice cloning (upload or microphone), music
from a caption, music for an uploaded video (models with a vision encoder), and the sampling
controls; each result is an audio player and its mel spectrogram.

`unimoe-audio serve` mounts it at `/` beside the API; `unimoe-audio demo` serves it alone. Either
way the page's requests go through `Service` as the API's do (the same limits and checks, the same
scheduler), so a page request and an API request can share a batch. A mistake a user can make
reaches the page as a Gradio error carrying the project's message, never a traceback.
"""

from __future__ import annotations

import io
import os
import threading
import time

import gradio as gr
import numpy as np
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from PIL import Image
from pydantic import ValidationError

from unimoe_audio.codec import load_audio
from unimoe_audio.errors import UniMoEError
from unimoe_audio.eval.spectral import plot_spectrograms
from unimoe_audio.model import UniMoEAudio
from unimoe_audio.serve import formats
from unimoe_audio.serve.errors import ApiError, validation_error
from unimoe_audio.serve.service import ClientGone, Sampling, ServeSettings, Service

LANGUAGES = ["en", "zh"]
CACHE_SECONDS = 3600  # Gradio keeps each result's files this long
_plotting = threading.Lock()  # pyplot's figure bookkeeping is not thread-safe


def spectrogram(wave: np.ndarray, rate: int, title: str) -> Image.Image:
    png = io.BytesIO()
    with _plotting:
        plot_spectrograms({"result": (wave, rate)}, {"result": title}, png)
    png.seek(0)
    return Image.open(png)


def optional(box: str | None) -> str | None:
    """An optional text box's value; None when empty."""
    return (box or "").strip() or None


def page(service: Service) -> gr.Blocks:
    api, limits = service.api, service.limits
    defaults = api.default_config("tts", "a", "en")
    voices = api.speakers

    async def generate(build, endpoint: str, title: str, controls, text_field: str, duration: float | None = None):
        """Queue a request like the API does, counted in /metrics as `page-<endpoint>`; (rate,
        samples) for the player and the spectrogram."""
        guidance, temperature, top_k, top_p, seed = controls
        started, endpoint = time.perf_counter(), f"page-{endpoint}"
        try:
            try:
                sampling = Sampling(guidance_scale=optional(guidance), temperature=temperature, top_k=int(top_k),
                                    top_p=top_p, seed=optional(seed))
            except ValidationError as err:
                raise validation_error(err) from None
            if duration is not None:
                duration = limits.duration(float(duration))
            wave = await service.clip(await service.submit(build, sampling, text_field, duration))
            if len(wave) == 0:
                raise UniMoEError("the model ended the audio before it began; try another seed")
        except (ApiError, UniMoEError, ClientGone) as err:
            service.count(endpoint, service.outcome(err), started)
            message = ("the request was cancelled" if isinstance(err, ClientGone) else
                       err.message if isinstance(err, ApiError) else str(err))
            raise gr.Error(message, print_exception=False) from None
        service.count(endpoint, "ok", started)
        image = await run_in_threadpool(spectrogram, wave, api.sample_rate, title)
        return (api.sample_rate, formats.pcm16(wave)), image

    async def speech(text, voice, language, *controls):
        def build():
            if voice not in voices:
                raise ApiError(400, f"unknown voice {voice!r}; this model's voices: {', '.join(voices)}", "voice")
            return api.request("tts", limits.text(text or "", "text"), language, voice)

        return await generate(build, "speech", f"{voice}: {text}", controls, "text")

    async def clone(prompt_path, prompt_text, text, language, *controls):
        def build():
            if prompt_path is None:
                raise ApiError(422, "give a voice prompt: upload a recording or record one", "voice prompt")
            limits.upload(os.path.getsize(prompt_path), "the voice prompt")
            return api.request("clone", limits.text(text or "", "text"), language, prompt_audio=load_audio(prompt_path),
                               prompt_text=limits.text(prompt_text or "", "transcript"))

        return await generate(build, "clone", f"cloned voice: {text}", controls, "text")

    async def music(caption, duration, *controls):
        def build():
            return api.request("t2m", caption=limits.text(caption or "", "caption"))

        return await generate(build, "music", caption, controls, "caption", duration)

    async def video_music(video_path, caption, *controls):
        def build():
            if video_path is None:
                raise ApiError(422, "give a video to make music for", "video")
            limits.upload(os.path.getsize(video_path), "the video")
            words = (caption or "").strip() and limits.text(caption, "caption")
            request = api.request("v2m", caption=words or "", video=video_path)
            limits.duration(api.video_seconds(request), "the video")
            return request

        return await generate(build, f"music for the video {caption or ''}".strip(), controls, "caption")

    with gr.Blocks(title="UniMoE-Audio", analytics_enabled=False, delete_cache=(CACHE_SECONDS, CACHE_SECONDS)) as blocks:
        gr.Markdown("# UniMoE-Audio\nSpeech and music from one model (a Dynamic-Capacity Mixture-of-Experts).")
        with gr.Row():
            with gr.Column():
                with gr.Tab("Speech"):
                    text = gr.Textbox(label="Text", lines=3, elem_id="speech-text")
                    voice = gr.Dropdown(voices, value=voices[0] if voices else None, label="Voice")
                    language = gr.Radio(LANGUAGES, value="en", label="Language")
                    speak = gr.Button("Generate speech", variant="primary", elem_id="speech-generate")
                with gr.Tab("Voice cloning"):
                    prompt = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                      label="Voice prompt (0.5–20 s): upload or record", elem_id="clone-prompt")
                    prompt_text = gr.Textbox(label="Transcript of the voice prompt", elem_id="clone-transcript")
                    clone_text = gr.Textbox(label="Text to say in that voice", lines=3, elem_id="clone-text")
                    clone_language = gr.Radio(LANGUAGES, value="en", label="Language")
                    cloned = gr.Button("Generate speech", variant="primary", elem_id="clone-generate")
                with gr.Tab("Music"):
                    caption = gr.Textbox(label="Caption", lines=2, elem_id="music-caption",
                                         placeholder="A jig on violin at 120 BPM in D major.")
                    duration = gr.Slider(0.5, limits.max_duration, value=min(10.0, limits.max_duration), step=0.5,
                                         label="Duration (seconds)")
                    compose = gr.Button("Generate music", variant="primary", elem_id="music-generate")
                with gr.Tab("Music for a video", visible=api.takes_video):
                    video = gr.Video(sources=["upload"], label="Video (as long as the music; at most "
                                     f"{limits.max_duration:g} s)", elem_id="v2m-video")
                    video_caption = gr.Textbox(label="Caption (optional)", lines=2, elem_id="v2m-caption",
                                               placeholder="Music for this video, on piano.")
                    score = gr.Button("Generate music for the video", variant="primary", elem_id="v2m-generate")
                with gr.Accordion("Sampling", open=False, elem_id="sampling"):
                    # text boxes, not gr.Number: an empty number box sends 0, and empty means the default here
                    guidance = gr.Textbox(label="Guidance scale", placeholder="the model's default for the task",
                                          info="classifier-free guidance")
                    temperature = gr.Slider(0, 2, value=defaults.temperature, step=0.05, label="Temperature",
                                            info="0: greedy")
                    top_k = gr.Slider(0, api.model.config.codebook_size, value=defaults.top_k, step=1, label="Top-k",
                                      info="0: no limit")
                    top_p = gr.Slider(0.01, 1, value=defaults.top_p, step=0.01, label="Top-p")
                    seed = gr.Textbox(label="Seed", placeholder="a random one", elem_id="seed")
            with gr.Column():
                audio = gr.Audio(label="Result", type="numpy", interactive=False, elem_id="result-audio")
                image = gr.Image(label="Mel spectrogram", type="pil", format="png", interactive=False,
                                 elem_id="result-spectrogram")
        controls = [guidance, temperature, top_k, top_p, seed]
        outputs = [audio, image]
        speak.click(speech, [text, voice, language, *controls], outputs)
        cloned.click(clone, [prompt, prompt_text, clone_text, clone_language, *controls], outputs)
        compose.click(music, [caption, duration, *controls], outputs)
        score.click(video_music, [video, video_caption, *controls], outputs)
    # the scheduler bounds and batches the work; Gradio's own queue would let one request at a time through
    return blocks.queue(default_concurrency_limit=None)


def mount(app: FastAPI, service: Service, path: str = "/") -> FastAPI:
    return gr.mount_gradio_app(app, page(service), path=path, ssr_mode=False)


def create_demo_app(api: UniMoEAudio, settings: ServeSettings = ServeSettings()) -> FastAPI:
    """The web page alone, at `/`."""
    service = Service(api, settings)
    return mount(FastAPI(title="UniMoE-Audio demo", lifespan=service.lifespan, docs_url=None, redoc_url=None), service)
