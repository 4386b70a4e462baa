"""Batching: one thread runs every request through the model's batched generation.

Requests wait in a bounded queue. The scheduler takes the oldest, then waits at most `batch_wait`
seconds for more that can share its batch (same sampling settings; lengths and guidance are per
request, so speech and music mix) until it has `max_batch`, and decodes them together. Requests
that arrive while a batch runs **join it between decode steps** (continuous batching): their
prompts are prefilled and their KV-cache rows added to the running batch (`model.Decoding`), as
long as they share its sampling settings and it has fewer than `max_batch` rows; the others wait
for the next batch. (A batch opened without classifier-free guidance has no unconditional rows,
so a guided request waits for the next batch too; with the default settings every task is guided.)
Rows leave a running batch as soon as their audio is complete or their client has gone.

Each request's audio is handed to its asyncio queue (`Job.get()`) as chunks as its frames
complete, or as one clip at its end, then `DONE`; an error is handed over in the same way.
The chunks (and clips) that fall due at the same step are decoded by the codec in one call, each
exactly as it would be alone. A request that cannot join (its prompt fails) fails alone. If a
decode step fails, the requests that have had no audio yet are each run again on their own and
the others fail, so one request's fault reaches only that request.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from unimoe_audio.model import AudioChunks, Decoding, GenerationConfig, Request, UniMoEAudio
from unimoe_audio.serve.metrics import Metrics

DONE = object()  # the last item of every successful job


class ShuttingDown(Exception):
    def __init__(self):
        super().__init__("the server is shutting down")


class QueueFull(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"the queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass(eq=False)
class Job:
    """One request and where its audio goes. `chunk_frames=None`: one clip when it ends."""

    request: Request
    config: GenerationConfig  # sampling settings; the lengths are the request's own
    chunk_frames: int | None
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    started: bool = False  # some audio was handed over
    closed: bool = False  # DONE or an error was handed over

    async def get(self):
        """The next chunk (float32 array), DONE, or an exception."""
        return await self.out.get()

    def cancel(self) -> None:
        self.cancelled = True

    def _put(self, item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)
        except RuntimeError:  # the event loop has closed: nobody is listening any more
            self.cancelled = True

    def send(self, wave) -> None:
        self.started = True
        self._put(wave)

    def finish(self) -> None:
        self.closed = True
        self._put(DONE)

    def fail(self, err: BaseException) -> None:
        self.closed = True
        self._put(err)


def sampling(config: GenerationConfig) -> GenerationConfig:
    """The part of a config a batch shares (lengths travel with each request)."""
    return replace(config, max_frames=1, min_frames=0)


class Scheduler:
    def __init__(self, api: UniMoEAudio, metrics: Metrics, max_batch: int = 8, batch_wait: float = 0.01,
                 queue_size: int = 64):
        self.api, self.metrics = api, metrics
        self.max_batch, self.batch_wait, self.queue_size = max_batch, batch_wait, queue_size
        self._waiting: deque[Job] = deque()
        self._lock = threading.Condition()
        self._stopping = False
        self._last_batch_seconds = 1.0
        self._thread = threading.Thread(target=self._serve, name="unimoe-scheduler", daemon=True)

    @property
    def depth(self) -> int:
        """Requests waiting for a batch."""
        return len(self._waiting)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue a job; QueueFull when `queue_size` are already waiting."""
        with self._lock:
            if self._stopping:
                raise ShuttingDown()
            if len(self._waiting) >= self.queue_size:
                raise QueueFull(max(1, math.ceil(self._last_batch_seconds)))
            self._waiting.append(job)
            self.metrics.queue_depth.set(len(self._waiting))
            self._lock.notify()

    def stop(self, timeout: float = 30.0) -> None:
        """Fail the waiting jobs, cancel the running batch and wait for the thread to end."""
        with self._lock:
            self._stopping = True
            while self._waiting:
                self._waiting.popleft().fail(ShuttingDown())
            self.metrics.queue_depth.set(0)
            self._lock.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _serve(self) -> None:
        while True:
            jobs = self._collect()
            if jobs is None:
                return
            if jobs:
                self._run(jobs)

    def _collect(self) -> list[Job] | None:
        """The next batch (None once stopping): the oldest job and those that can share its batch."""
        with self._lock:
            while not self._waiting and not self._stopping:
                self._lock.wait()
            if self._stopping:
                return None
            first = self._waiting.popleft()
            batch, key = [first], sampling(first.config)
            deadline = time.monotonic() + self.batch_wait
            while len(batch) < self.max_batch and not self._stopping:
                for job in [j for j in self._waiting if sampling(j.config) == key][: self.max_batch - len(batch)]:
                    self._waiting.remove(job)
                    batch.append(job)
                left = deadline - time.monotonic()
                if len(batch) >= self.max_batch or left <= 0:
                    break
                self._lock.wait(left)
            self.metrics.queue_depth.set(len(self._waiting))
        for job in batch:
            if job.cancelled:
                job.fail(asyncio.CancelledError())
        return [job for job in batch if not job.cancelled]

    def _run(self, jobs: list[Job]) -> None:
        try:
            self._decode(jobs)
        except Exception as err:  # noqa: BLE001 - the server outlives any request's failure
            if len(jobs) > 1:
                for job in [j for j in jobs if not j.closed]:
                    if not job.started:
                        self._run([job])
                    else:
                        job.fail(err)
            elif not jobs[0].closed:
                jobs[0].fail(err)
        finally:
            self.metrics.batch_rows.set(0)

    def _joiners(self, batch: Decoding, key: GenerationConfig, room: int) -> list[Job]:
        """Waiting jobs that can join the running batch (at most `room`), taken off the queue."""
        if room <= 0:
            return []
        with self._lock:
            found = [j for j in self._waiting if sampling(j.config) == key and batch.accepts(j.request)][:room]
            for job in found:
                self._waiting.remove(job)
            self.metrics.queue_depth.set(len(self._waiting))
        return found

    def _decode(self, jobs: list[Job]) -> None:
        """Decode `jobs` until every one has ended; the list is kept in place as the jobs in the batch
        (those that join are added, those that end are removed) for `_run`'s error handling."""
        self.metrics.batch_size.observe(len(jobs))
        key = sampling(jobs[0].config)
        batch = self.api.generator.decoding([job.request for job in jobs], jobs[0].config)
        rows = dict(zip(batch.ids, jobs))  # decoding id -> job
        audio = {i: AudioChunks(self.api, job.chunk_frames) for i, job in rows.items()}
        no_frames = torch.empty(self.api.generator.pattern.num_codebooks, 0, dtype=torch.long, device=batch.device)
        frames = {i: no_frames for i in rows}  # each request's delayed frames so far [K, s]
        probs = {i: [] for i in rows} if key.output == "expected" else None  # ... and distributions, [K, C] per step
        start, frames_made = time.perf_counter(), 0
        while batch.ids:
            for job in self._joiners(batch, key, self.max_batch - len(batch)):
                try:
                    (i,) = batch.join([job.request])
                except Exception as err:  # noqa: BLE001 - a request that cannot join fails alone
                    job.fail(err)
                    continue
                jobs.append(job)
                rows[i], audio[i] = job, AudioChunks(self.api, job.chunk_frames)
                frames[i] = no_frames
                if probs is not None:
                    probs[i] = []
                self.metrics.joined.inc()
            gone, due = set(), {}  # due: the codes of the rows with a chunk to decode this step
            for row, (i, (frame, eos_at)) in enumerate(batch.step().items()):
                job = rows[i]
                frames_made += 1
                frames[i] = torch.cat([frames[i], frame[:, None]], dim=-1)
                if probs is not None:
                    probs[i].append(batch.probs[row])
                if job.cancelled or self._stopping:
                    gone.add(i)
                    job.fail(asyncio.CancelledError())
                    continue
                codes = audio[i].ready(frames[i], eos_at, None if probs is None else probs[i])
                if codes is not None:
                    due[i] = codes
            for i, wave in self._waves(due).items():
                if isinstance(wave, Exception):
                    gone.add(i)
                    rows[i].fail(wave)
                else:
                    rows[i].send(audio[i].chunk(wave))
            for i in rows.keys() - gone:
                if audio[i].finished:
                    gone.add(i)
                    rows[i].finish()
            batch.drop(gone)
            for i in gone:  # a busy batch lives for many requests: keep only what its rows need
                jobs.remove(rows.pop(i))
                del audio[i], frames[i]
                if probs is not None:
                    del probs[i]
            self.metrics.batch_rows.set(len(batch))
        elapsed = time.perf_counter() - start
        self._last_batch_seconds = elapsed
        self.metrics.frames.inc(frames_made)
        self.metrics.frames_per_second.set(frames_made / max(elapsed, 1e-9))

    def _waves(self, due: dict[int, torch.Tensor]) -> dict[int, np.ndarray | Exception]:
        """The waveforms of the rows whose chunks are due, decoded together (rows in step, such as
        those that opened the batch, reach their chunks at the same step); if that fails, each row
        alone, so that a failure stays with its own request."""
        try:
            return dict(zip(due, self.api.decode_all(list(due.values()))))
        except Exception:  # noqa: BLE001 - some row's codes did not decode: find which
            waves = {}
            for i, codes in due.items():
                try:
                    waves[i] = self.api.decode(codes)
                except Exception as err:  # noqa: BLE001 - decoding one row failed: only its request fails
                    waves[i] = err
            return waves
