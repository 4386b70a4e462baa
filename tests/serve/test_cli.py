"""`unimoe-audio serve` as a real process: starts, answers, finishes in-flight work on SIGTERM, exits."""

import io
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import soundfile as sf

from unimoe_audio.cli.main import main


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: str, model_dir, *options: str, ready: str = "/health") -> tuple[subprocess.Popen, str, float]:
    """`unimoe-audio COMMAND` on a free port, once `ready` answers; (process, url, hang-guard deadline)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "unimoe_audio.cli.main", command, "--model", str(model_dir),
                             "--port", str(port), *options], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180  # hang guard (importing gradio is slow on a busy CPU), not a performance bound
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(url + ready).status_code == 200:
                return proc, url, deadline
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"{command} did not come up: {proc.communicate()[0][-2000:]}")


def test_serve_starts_answers_and_shuts_down_gracefully(model_dir):
    proc, url, deadline = start("serve", model_dir, "--max-batch", "4", "--batch-wait-ms", "5")
    try:
        result = {}
        in_flight = threading.Thread(target=lambda: result.update(r=httpx.post(
            url + "/v1/audio/music", json={"caption": "a jig", "duration": 20.0}, timeout=60)))
        in_flight.start()
        while "unimoe_batch_rows 1.0" not in httpx.get(url + "/metrics").text:
            assert time.monotonic() < deadline, "the music request never started"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
        in_flight.join(60)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGTERM, output  # uvicorn ends by the signal it caught, once shut down
    assert "serving" in output and "Finished server process" in output
    assert result["r"].status_code == 200  # finished, not cut off
    assert len(sf.read(io.BytesIO(result["r"].content))[0]) == (1000 - 1) * 320


def test_demo_serves_the_web_page_alone(model_dir):
    proc, url, _ = start("demo", model_dir, ready="/")
    try:
        assert httpx.get(url + "/config").json()["title"] == "UniMoE-Audio"  # the page's description
        assert httpx.post(url + "/v1/audio/speech", json={}).status_code != 200  # no API beside it
        assert httpx.get(url + "/docs").status_code == 404
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert "serving the web page" in output and "Finished server process" in output


def test_serve_needs_a_model(capsys, tmp_path):
    assert main(["serve", "--model", str(tmp_path / "nothing")]) == 2
    assert "no model at" in capsys.readouterr().err
