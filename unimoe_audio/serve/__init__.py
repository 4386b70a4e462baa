"""Serving: an HTTP API over `UniMoEAudio` (FastAPI + uvicorn) with batched, streamed generation.

    app.py        routes: OpenAI-compatible speech, cloning, music, voices, health, metrics
    scheduler.py  the batching thread: collects requests, decodes them together, hands out audio
    limits.py     what one request may ask for
    errors.py     JSON errors in OpenAI's shape, naming the field at fault
    formats.py    wav / flac / pcm bodies and streams
    metrics.py    Prometheus metrics
"""

from unimoe_audio.serve.app import ServeSettings, create_app
from unimoe_audio.serve.limits import Limits

__all__ = ["Limits", "ServeSettings", "create_app"]
