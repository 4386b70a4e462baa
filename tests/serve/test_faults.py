"""Faults over real connections: a full queue, clients that go away, errors reaching the openai client."""

import socket
import threading

import httpx
import openai
import pytest

from unimoe_audio.serve import ServeSettings

from .conftest import LIMITS, LiveServer

LONG_MUSIC = {"caption": "a jig", "duration": 20.0}  # 1000 frames: long enough to be interrupted


@pytest.fixture
def one_at_a_time(api):
    live = LiveServer(api, ServeSettings(max_batch=1, batch_wait_ms=0, queue_size=1, limits=LIMITS))
    yield live
    live.stop()


def cancelled(server) -> float:
    return server.metric('unimoe_requests_total{endpoint="music",outcome="cancelled"}')


def test_a_full_queue_answers_429_with_retry_after_and_a_gone_stream_frees_the_model(one_at_a_time):
    server = one_at_a_time
    with server.client.stream("POST", "/v1/audio/music", json={**LONG_MUSIC, "stream": True}) as running:
        audio = running.iter_raw()  # (a dropped iterator would close the response)
        next(audio)  # decoding now
        waiting = {}
        thread = threading.Thread(target=lambda: waiting.update(r=server.client.post(
            "/v1/audio/speech", json={"model": "m", "input": "Hello there.", "voice": "en_slt"})))
        thread.start()
        server.wait_for(lambda: server.scheduler.depth == 1, "the second request to queue")
        refused = server.client.post("/v1/audio/music", json={"caption": "a jig", "duration": 1.0})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["type"] == "rate_limit_error"
    # the stream's client has gone: its row leaves the batch and the queued request runs
    thread.join(60)
    assert waiting["r"].status_code == 200
    server.wait_for(lambda: cancelled(server) == 1, "the stream to count as cancelled")
    assert server.metric('unimoe_requests_total{endpoint="music",outcome="rejected"}') == 1


def test_a_client_that_disconnects_before_its_audio_has_its_request_dropped(one_at_a_time):
    server = one_at_a_time
    body = httpx.Request("POST", server.url + "/v1/audio/music", json=LONG_MUSIC)
    head = f"POST /v1/audio/music HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" \
           f"Content-Length: {len(body.content)}\r\n\r\n"
    with socket.create_connection(server.url.removeprefix("http://").split(":")) as sock:
        sock.sendall(head.encode() + body.content)
        server.wait_for(lambda: server.metric("unimoe_batch_rows") == 1, "the request to decode")
    server.wait_for(lambda: cancelled(server) == 1, "the request to count as cancelled")
    server.wait_for(lambda: server.metric("unimoe_batch_rows") == 0, "its row to leave")
    assert server.metric("unimoe_frames_total") < 1000  # it never made its 1000 frames


def test_the_openai_client_speaks_streams_and_sees_errors(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    audio = client.audio.speech.create(model="unimoe-audio", voice="en_slt", input="Hello there.",
                                       response_format="wav")
    assert audio.content.startswith(b"RIFF") and len(audio.content) > 44
    with client.audio.speech.with_streaming_response.create(model="unimoe-audio", voice="en_slt", input="Hello.",
                                                            response_format="pcm") as streamed:
        pcm = b"".join(streamed.iter_bytes())
    assert len(pcm) > 0 and len(pcm) % 2 == 0
    with pytest.raises(openai.BadRequestError, match="unknown voice 'alloy'"):
        client.audio.speech.create(model="tts-1", voice="alloy", input="Hello.")
    with pytest.raises(openai.BadRequestError, match="speed"):
        client.audio.speech.create(model="tts-1", voice="en_slt", input="Hello.", speed=2.0)
