"""Serving under load, on loopback: batched against one-at-a-time, and memory over a soak.

Starts `unimoe-audio serve` as its own process on a free port (`--model`, default: a random-weight
model of the shipped model's size: the `small` preset, hidden 256, 6 layers, DCMoE, 8 codebooks ×
256 codes, a spectral codec of the same shape), then:
  1. sequential: `--requests` streamed requests (speech and music alternating), one at a time;
  2. concurrent: the same requests from `--clients` clients at once (the server batches them);
  3. soak: `--soak` more requests from the clients, the server's resident memory before and after.
For 1 and 2: seconds of audio per second of wall time, p50/p95 latency (to the last byte) and time
to the first streamed chunk. Every request must succeed. Bounded: it stops taking new requests
after `--max-seconds` and says so. Requests carry no seed, so they share batches (a batch's
requests agree on sampling settings); with random weights speech ends wherever EOS happens to win,
so throughput counts the audio actually made.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import torch

from unimoe_audio.codec import SpectralCodec, SpectralCodecConfig
from unimoe_audio.model import TextFrontend, UniMoEAudio, UniMoEAudioConfig, UniMoEAudioModel

TEXTS = ["The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
         "Rice is often served in round bowls.", "The juice of lemons makes fine punch."]
CAPTIONS = ["A jig on violin at 120 BPM in D major.", "A slow piano waltz in A minor."]
RATE = 16_000  # the spectral codec's, and X-Sample-Rate


def random_model(directory: Path) -> Path:
    """A random-weight model of the shipped model's size (configs/pretrained.yaml), saved to `directory`."""
    torch.manual_seed(0)
    frontend = TextFrontend.fit([{"task": "tts", "text": t, "language": "en", "speaker": v} for t in TEXTS
                                 for v in ("en_a", "en_b")] + [{"task": "t2m", "caption": c} for c in CAPTIONS])
    k, codes = 8, 256
    config = UniMoEAudioConfig.preset("small", intermediate_size=1024, text_vocab_size=len(frontend), num_codebooks=k,
                                      codebook_size=codes, delays=tuple(range(k)))
    codec = SpectralCodec(SpectralCodecConfig(num_codebooks=k, codebook_size=codes), torch.zeros(128), torch.ones(128),
                          torch.randn(k, codes, 128) * 0.1)
    return UniMoEAudio(UniMoEAudioModel(config), frontend, codec).save_pretrained(directory)


def bodies(n: int, voice: str, music_seconds: float) -> list[tuple[str, dict]]:
    """n streamed requests, speech and music alternating."""
    out = []
    for i in range(n):
        if i % 2 == 0:
            body = {"model": "unimoe-audio", "input": TEXTS[i // 2 % len(TEXTS)], "voice": voice}
            out.append(("/v1/audio/speech", {**body, "stream": True, "response_format": "pcm"}))
        else:
            body = {"caption": CAPTIONS[i // 2 % len(CAPTIONS)], "duration": music_seconds}
            out.append(("/v1/audio/music", {**body, "stream": True, "response_format": "pcm"}))
    return out


@dataclass
class Result:
    ok: bool
    latency: float = 0.0  # seconds to the last byte
    first_chunk: float = 0.0  # seconds to the first audio bytes
    audio: float = 0.0  # seconds of audio received
    error: str = ""


def send(client: httpx.Client, path: str, body: dict) -> Result:
    start = time.perf_counter()
    first, size = None, 0
    try:
        with client.stream("POST", path, json=body) as r:
            if r.status_code != 200:
                return Result(False, error=f"{r.status_code} {r.read()[:200]!r}")
            for chunk in r.iter_raw():
                if chunk and first is None:
                    first = time.perf_counter() - start
                size += len(chunk)
    except httpx.HTTPError as err:
        return Result(False, error=repr(err))
    return Result(True, time.perf_counter() - start, first or 0.0, size / 2 / RATE)


def run(url: str, requests: list[tuple[str, dict]], clients: int, deadline: float) -> tuple[list[Result], float]:
    """The requests from `clients` threads; new ones stop at `deadline`. (results, wall seconds)."""
    todo: queue.Queue = queue.Queue()
    for item in requests:
        todo.put(item)
    results: list[Result] = []

    def client() -> None:
        with httpx.Client(base_url=url, timeout=300) as http:
            while time.monotonic() < deadline:
                try:
                    path, body = todo.get_nowait()
                except queue.Empty:
                    return
                results.append(send(http, path, body))

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - start


def batches(url: str) -> tuple[float, float]:
    """(requests, batches) decoded so far, from the server's batch-size histogram."""
    sums = {}
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(("unimoe_batch_size_sum", "unimoe_batch_size_count")):
            sums[line.split()[0]] = float(line.split()[1])
    return sums["unimoe_batch_size_sum"], sums["unimoe_batch_size_count"]


def phase(name: str, url: str, requests: list[tuple[str, dict]], clients: int, deadline: float) -> dict:
    """One run of `requests`, summarised (mean batch: requests per batch the server decoded meanwhile)."""
    rows_before, count_before = batches(url)
    results, wall = run(url, requests, clients, deadline)
    rows_after, count_after = batches(url)
    return summary(name, results, wall) | dict(batch=(rows_after - rows_before) / max(1.0, count_after - count_before))


def summary(name: str, results: list[Result], wall: float) -> dict:
    ok = [r for r in results if r.ok]
    latency = np.array([r.latency for r in ok]) if ok else np.zeros(1)
    first = np.array([r.first_chunk for r in ok]) if ok else np.zeros(1)
    audio = sum(r.audio for r in ok)
    for r in [r for r in results if not r.ok][:3]:
        print(f"{name}: a request failed: {r.error}")
    return dict(name=name, requests=len(results), failed=len(results) - len(ok), audio=audio, wall=wall,
                throughput=audio / wall, p50=np.percentile(latency, 50), p95=np.percentile(latency, 95),
                first50=np.percentile(first, 50), first95=np.percentile(first, 95))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def start_server(model: Path, max_batch: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "unimoe_audio.cli.main", "serve", "--model", str(model),
                             "--port", str(port), "--max-batch", str(max_batch), "--queue-size", "256"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("the server did not start")
        try:
            if httpx.get(url + "/health").status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="model directory (default: a random-weight model of the shipped size)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--requests", type=int, default=16, help="requests in the sequential and concurrent runs (default 16)")
    p.add_argument("--soak", type=int, default=100, help="requests in the memory soak (default 100)")
    p.add_argument("--music-seconds", type=float, default=2.0, help="duration of each music request (default 2)")
    p.add_argument("--max-batch", type=int, default=8, help="the server's --max-batch (default 8)")
    p.add_argument("--max-seconds", type=float, default=900, help="no new requests after this long (default 900)")
    args = p.parse_args()
    deadline = time.monotonic() + args.max_seconds
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or random_model(Path(tmp) / "random-small")
        proc, url = start_server(model, args.max_batch)
        try:
            voice = httpx.get(url + "/v1/voices").json()["voices"][0]
            requests = bodies(args.requests, voice, args.music_seconds)
            run(url, requests[:2], 2, deadline)  # warm-up
            rows = [phase("sequential (1 client)", url, requests, 1, deadline),
                    phase(f"concurrent ({args.clients} clients)", url, requests, args.clients, deadline)]
            before = rss_mib(proc.pid)
            soak = phase(f"soak ({args.clients} clients)", url, bodies(args.soak, voice, args.music_seconds),
                         args.clients, deadline)
            after = rss_mib(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    print(f"model: {args.model or 'random weights, small preset, 8 x 256 codes'}; {os.cpu_count()} CPU cores, "
          f"torch threads in the server: {os.environ.get('OMP_NUM_THREADS', 'default')}; max batch {args.max_batch}")
    print("| run | requests | failed | audio s | wall s | audio s / s | p50 latency s | p95 latency s | "
          "first chunk p50 s | first chunk p95 s | mean batch |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in [*rows, soak]:
        print(f"| {r['name']} | {r['requests']} | {r['failed']} | {r['audio']:.1f} | {r['wall']:.1f} | "
              f"{r['throughput']:.2f} | {r['p50']:.2f} | {r['p95']:.2f} | {r['first50']:.2f} | {r['first95']:.2f} | "
              f"{r['batch']:.1f} |")
    print(f"batched / sequential throughput: {rows[1]['throughput'] / rows[0]['throughput']:.2f}x")
    print(f"server resident memory: {before:.0f} MiB before the soak of {soak['requests']} requests, {after:.0f} MiB after")
    done = sum(r["requests"] for r in [*rows, soak])
    if done < 2 * args.requests + args.soak:
        print(f"stopped at --max-seconds {args.max_seconds:.0f}: {done} of {2 * args.requests + args.soak} requests sent")
    failed = sum(r["failed"] for r in [*rows, soak])
    if failed:
        raise SystemExit(f"{failed} requests failed")


if __name__ == "__main__":
    main()
