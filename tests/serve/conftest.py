"""A tiny random-weight model saved to disk and real servers on free loopback ports (uvicorn in a
thread, so tests can look inside the scheduler); the CLI test starts its own process."""

import socket
import threading
import time

import httpx
import pytest
import torch
import uvicorn

from unimoe_audio.model import TextFrontend, UniMoEAudio, UniMoEAudioModel
from unimoe_audio.serve import Limits, ServeSettings, create_app

from ..model.conftest import ENTRIES, tiny_codec, tiny_config

LIMITS = Limits(max_text_chars=300, max_duration=30.0, max_upload_bytes=200_000)
MAX_POSITIONS = 1024  # 20 s of music fits, 25 s does not


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    # The front-end also knows the sentences these tests send (a model refuses text it mostly cannot read).
    spoken = [{"task": "tts", "language": "en", "text": t} for t in ("Hello there.", "Hello.", "Rice is served.", "word")]
    frontend = TextFrontend.fit(ENTRIES + spoken)
    api = UniMoEAudio(UniMoEAudioModel(tiny_config(frontend, max_positions=MAX_POSITIONS)), frontend, tiny_codec())
    return api.save_pretrained(tmp_path_factory.mktemp("serve") / "tiny-model")


@pytest.fixture(scope="session")
def api(model_dir):
    return UniMoEAudio.from_pretrained(model_dir)


class LiveServer:
    """create_app(...) served by uvicorn on a free loopback port until `stop()`."""

    def __init__(self, api, settings: ServeSettings):
        self.app = create_app(api, settings, name="tiny-model")
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30  # hang guard, not a performance bound
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.01)
        self.client = httpx.Client(base_url=self.url, timeout=60)

    @property
    def scheduler(self):
        return self.app.state.scheduler

    def metric(self, name: str) -> float:
        """The value of one sample line of /metrics, e.g. 'unimoe_queue_depth'; 0 when absent."""
        for line in self.client.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return 0.0

    def wait_for(self, condition, what: str) -> None:
        deadline = time.monotonic() + 30  # hang guard, not a performance bound
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def server(api):
    live = LiveServer(api, ServeSettings(max_batch=8, batch_wait_ms=20, limits=LIMITS))
    yield live
    live.stop()
