"""The HTTP contract: status codes, formats, headers, streaming, errors naming their field, metrics."""

import io
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf

from unimoe_audio.serve import formats

SPEECH = {"model": "unimoe-audio", "input": "Hello there.", "voice": "en_slt"}
GREEDY = {"temperature": 0.0}


def prompt_wav(wave) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, 16_000, format="WAV")
    return buffer.getvalue()


def speech_like(seconds: float) -> np.ndarray:
    return np.random.default_rng(0).normal(0, 0.1, int(16_000 * seconds)).astype(np.float32)


def test_speech_answers_with_a_wav_of_the_model(server):
    r = server.client.post("/v1/audio/speech", json=SPEECH)
    assert r.status_code == 200
    assert r.headers["content-type"] == "audio/wav" and r.headers["x-sample-rate"] == "16000"
    wave, rate = sf.read(io.BytesIO(r.content))
    assert rate == 16_000 and wave.ndim == 1 and len(wave) > 0


def test_the_three_formats_carry_the_same_audio(server):
    bodies = {fmt: server.client.post("/v1/audio/speech", json={**SPEECH, **GREEDY, "response_format": fmt})
              for fmt in ("wav", "flac", "pcm")}
    assert {fmt: r.headers["content-type"] for fmt, r in bodies.items()} == formats.MEDIA_TYPES
    pcm = np.frombuffer(bodies["pcm"].content, dtype="<i2")
    for fmt in ("wav", "flac"):
        wave, rate = sf.read(io.BytesIO(bodies[fmt].content), dtype="int16")
        assert rate == 16_000 and np.array_equal(wave, pcm)


def test_music_is_exactly_as_long_as_asked_and_equals_the_python_api(server, api):
    r = server.client.post("/v1/audio/music", json={"caption": "a jig on violin", "duration": 0.5, **GREEDY})
    assert r.status_code == 200
    config = replace(api.default_config("t2m", duration=0.5), temperature=0.0)
    expected = api.generate([api.request("t2m", caption="a jig on violin")], config)[0]
    assert r.content == formats.encode(expected, 16_000, "wav")
    assert len(expected) == (25 - 1) * 320  # 25 frames


def test_a_stream_sends_the_audio_in_order_as_it_is_made(server, api):
    body = {"caption": "a jig on violin", "duration": 2.0, "stream": True, "response_format": "wav", **GREEDY}
    with server.client.stream("POST", "/v1/audio/music", json=body) as r:
        assert r.status_code == 200 and r.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in r.headers
        pieces = list(r.iter_raw())
    data = b"".join(pieces)
    header = formats.stream_header(16_000, "wav")
    assert data.startswith(header) and len(pieces) >= 3
    config = replace(api.default_config("t2m", duration=2.0), temperature=0.0)
    chunks = list(api.stream(api.request("t2m", caption="a jig on violin"), config, chunk_frames=25))
    assert len(chunks) == 4  # 100 frames in chunks of 25
    assert data[len(header):] == b"".join(formats.encode(c, 16_000, "pcm") for c in chunks)


def test_expected_output_is_served_whole_and_streamed_as_the_python_api_makes_it(server, api):
    body = {"caption": "a jig on violin", "duration": 1.0, "output": "expected", **GREEDY}
    whole = server.client.post("/v1/audio/music", json=body)
    config = replace(api.default_config("t2m", duration=1.0), temperature=0.0, output="expected")
    expected = api.generate([api.request("t2m", caption="a jig on violin")], config)[0]
    assert whole.status_code == 200 and whole.content == formats.encode(expected, 16_000, "wav")
    with server.client.stream("POST", "/v1/audio/music", json={**body, "stream": True}) as r:
        data = b"".join(r.iter_raw())
    chunks = api.stream(api.request("t2m", caption="a jig on violin"), config, chunk_frames=25)
    header = formats.stream_header(16_000, "wav")
    assert data == header + b"".join(formats.encode(c, 16_000, "pcm") for c in chunks)


def test_clone_takes_an_uploaded_voice(server):
    r = server.client.post("/v1/audio/clone", data={"input": "Rice is served.", "prompt_text": "Glue the sheet."},
                           files={"prompt_audio": ("me.wav", prompt_wav(speech_like(1.0)), "audio/wav")})
    assert r.status_code == 200 and len(sf.read(io.BytesIO(r.content))[0]) > 0


def test_voices_health_docs(server, api):
    assert server.client.get("/v1/voices").json()["voices"] == api.speakers
    health = server.client.get("/health").json()
    assert health["status"] == "ok" and health["sample_rate"] == 16_000
    assert "/v1/audio/speech" in server.client.get("/openapi.json").json()["paths"]
    assert "swagger" in server.client.get("/docs").text.lower()


def test_metrics_count_requests_batches_and_frames(server):
    before = server.metric('unimoe_requests_total{endpoint="speech",outcome="ok"}')
    server.client.post("/v1/audio/speech", json=SPEECH)
    server.client.post("/v1/audio/speech", json={**SPEECH, "voice": "alloy"})
    r = server.client.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    assert server.metric('unimoe_requests_total{endpoint="speech",outcome="ok"}') == before + 1
    assert server.metric('unimoe_requests_total{endpoint="speech",outcome="invalid"}') >= 1
    for name in ('unimoe_request_seconds_count{endpoint="speech"}', "unimoe_batch_size_count", "unimoe_frames_total",
                 "unimoe_frames_per_second"):
        assert server.metric(name) > 0, name
    assert "unimoe_queue_depth 0.0" in r.text


@pytest.mark.parametrize("change, status, param, message", [
    ({"speed": 1.5}, 400, "speed", "not supported"),
    ({"instructions": "cheerful"}, 400, "instructions", "not supported"),
    ({"stream_format": "sse"}, 400, "stream_format", "not supported"),
    ({"voice": "alloy"}, 400, "voice", "en_slt"),
    ({"response_format": "mp3"}, 400, "response_format", "wav"),
    ({"response_format": "flac", "stream": True}, 400, "response_format", "streaming"),
    ({"emotion": "happy"}, 400, "emotion", "cannot honour"),
    ({"input": None}, 422, "input", "input"),
    ({"input": "word " * 100}, 422, "input", "at most 300"),
    ({"input": "  "}, 422, "input", "empty"),
    ({"input": "؟؟"}, 400, "input", "cannot read"),
    ({"temperature": -1}, 422, "temperature", "temperature"),
    ({"output": "mean"}, 422, "output", "expected"),
])
def test_speech_fields_the_model_cannot_honour_are_named(server, change, status, param, message):
    body = {k: v for k, v in {**SPEECH, **change}.items() if v is not None}
    r = server.client.post("/v1/audio/speech", json=body)
    assert r.status_code == status
    error = r.json()["error"]
    assert error["param"] == param and message in error["message"]


@pytest.mark.parametrize("body, status, param, message", [
    ({"caption": "a jig", "duration": 31}, 422, "duration", "(0, 30.0]"),
    ({"caption": "a jig", "duration": 0}, 422, "duration", "(0, 30.0]"),
    ({"caption": "x" * 301}, 422, "caption", "at most 300"),
    ({"caption": "a jig", "duration": 25}, 400, None, "positions"),  # within the limit, beyond this model
])
def test_music_limits(server, body, status, param, message):
    r = server.client.post("/v1/audio/music", json=body)
    assert r.status_code == status
    assert r.json()["error"]["param"] == param and message in r.json()["error"]["message"]


@pytest.mark.parametrize("upload, status, message", [
    (b"RIFF not really a wave file", 400, "cannot read audio file me.wav"),
    (prompt_wav(np.zeros(16_000, np.float32)), 400, "silent"),
    (prompt_wav(speech_like(0.2)), 400, "0.20 s long"),
    (prompt_wav(speech_like(7.0)), 413, "at most 200000"),  # 224 kB
])
def test_bad_voice_prompts_get_the_clis_errors(server, upload, status, message):
    r = server.client.post("/v1/audio/clone", data={"input": "Rice is served.", "prompt_text": "Glue the sheet."},
                           files={"prompt_audio": ("me.wav", upload, "audio/wav")})
    assert r.status_code == status
    assert r.json()["error"]["param"] == "prompt_audio" and message in r.json()["error"]["message"]


@pytest.fixture(scope="module")
def video_server(tmp_path_factory):
    """A tiny random-weight model with a vision encoder, served."""
    import torch

    from unimoe_audio.model import TextFrontend, UniMoEAudio, UniMoEAudioModel, VisionConfig
    from unimoe_audio.serve import ServeSettings

    from ..model.conftest import ENTRIES, tiny_codec, tiny_config
    from .conftest import LIMITS, LiveServer

    torch.manual_seed(0)
    frontend = TextFrontend.fit(ENTRIES + [{"task": "v2m", "caption": "music for this video."}])
    api = UniMoEAudio(UniMoEAudioModel(tiny_config(frontend, vision=VisionConfig(fps=4.0, size=16))), frontend,
                      tiny_codec())
    live = LiveServer(api, ServeSettings(max_batch=8, batch_wait_ms=20, limits=LIMITS))
    clip = tmp_path_factory.mktemp("video") / "clip.mp4"
    from unimoe_audio.video import write_video

    write_video(clip, np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8), fps=10)  # 1 s
    yield live, api, clip
    live.stop()


def test_music_for_an_uploaded_video_lasts_as_long_as_the_video_and_equals_the_python_api(video_server):
    from unimoe_audio.model import GenerationConfig

    live, api, clip = video_server
    video = {"video": ("clip.mp4", clip.read_bytes(), "video/mp4")}
    r = live.client.post("/v1/audio/music", data={"caption": "music for this video.", "temperature": "0"}, files=video)
    assert r.status_code == 200, r.text
    expected, _ = api.music("music for this video.", video=clip, config=GenerationConfig(temperature=0.0))
    assert r.content == formats.encode(expected, 16_000, "wav") and len(expected) == (50 - 1) * 320  # 1 s
    r = live.client.post("/v1/audio/music", data={"duration": "0.5"}, files=video)  # no caption; a duration
    assert r.status_code == 200 and len(sf.read(io.BytesIO(r.content))[0]) == (25 - 1) * 320


@pytest.mark.parametrize("fields, upload, status, param, message", [
    ({"caption": "a jig"}, None, 422, "video", "a video file is required"),
    ({}, b"not a video", 400, "video", "cannot read the video"),
    ({"speed": "2"}, "clip", 400, "speed", "cannot honour"),
    ({}, b"x" * 300_000, 413, "video", "at most 200000"),
])
def test_bad_video_uploads_are_named(video_server, fields, upload, status, param, message):
    live, _, clip = video_server
    data = clip.read_bytes() if upload == "clip" else upload
    files = {"video": ("clip.mp4", data, "video/mp4")} if data is not None else {"x": ("x.txt", b"x", "text/plain")}
    r = live.client.post("/v1/audio/music", data=fields, files=files)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param and message in r.json()["error"]["message"]


def test_a_model_without_vision_refuses_a_video(server, video_server):
    clip = video_server[2]
    r = server.client.post("/v1/audio/music", data={"caption": "a jig"}, files={"video": ("c.mp4", clip.read_bytes())})
    assert r.status_code == 400 and "no vision encoder" in r.json()["error"]["message"]


def test_a_released_checkpoint_makes_music_for_an_uploaded_video_as_the_python_api_does(released_folder, tmp_path):
    """Through its Qwen2.5-VL vision tower; `duration` keeps the tiny codec's 2000 frames/s short."""
    from unimoe_audio.model import UniMoEAudio
    from unimoe_audio.serve import ServeSettings
    from unimoe_audio.video import write_video

    from .conftest import LIMITS, LiveServer

    api = UniMoEAudio.from_pretrained(released_folder)
    clip = write_video(tmp_path / "clip.mp4", np.random.default_rng(0).integers(0, 256, (4, 40, 60, 3), dtype=np.uint8), 2)
    live = LiveServer(api, ServeSettings(max_batch=8, batch_wait_ms=20, limits=LIMITS))
    try:
        r = live.client.post("/v1/audio/music", data={"caption": "A calm piano piece.", "duration": "0.01", **GREEDY},
                             files={"video": ("clip.mp4", clip.read_bytes(), "video/mp4")})
    finally:
        live.stop()
    assert r.status_code == 200, r.text
    expected, rate = api.music("A calm piano piece.", 0.01, video=clip, config=replace(api.default_config("v2m"), **GREEDY))
    assert r.content == formats.encode(expected, rate, "wav") and len(expected) == 20 * 8
