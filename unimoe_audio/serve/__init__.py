"""Serving: an HTTP API over `UniMoEAudio` (FastAPI + uvicorn) with batched, streamed generation.

    app.py        routes: OpenAI-compatible speech, cloning, music, voices, health, metrics
    webui.py      the web page (Gradio), mounted at / or served alone (`unimoe-audio demo`)
    service.py    what both do with a request: check it, queue it, hand back its audio
    scheduler.py  the batching thread: collects requests, decodes them together, hands out audio
    limits.py     what one request may ask for
    errors.py     JSON errors in OpenAI's shape, naming the field at fault
    formats.py    wav / flac / pcm bodies and streams
    metrics.py    Prometheus metrics
"""

from unimoe_audio.serve.app import create_app
from unimoe_audio.serve.limits import Limits
from unimoe_audio.serve.service import ServeSettings

__all__ = ["Limits", "ServeSettings", "create_app"]
