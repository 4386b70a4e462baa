"""The batching scheduler on the real model: what shares a batch, rows leaving it, failures kept apart."""

import asyncio
import weakref
from dataclasses import replace

import numpy as np
import torch

from unimoe_audio.errors import UniMoEError
from unimoe_audio.serve.metrics import Metrics
from unimoe_audio.serve.scheduler import DONE, Job, Scheduler


def job(api, loop, task, chunk_frames=None, duration=None, caption="a jig", **settings):
    text = "Hello there." if task == "tts" else ""
    request = api.request(task, text, "en", "en_slt" if task == "tts" else None,
                          caption=caption if task == "t2m" else "")
    config = replace(api.default_config(task, text, "en", duration), temperature=0.0, **settings)
    request.max_frames, request.min_frames = config.max_frames, config.min_frames
    return Job(request, config, chunk_frames, loop)


async def collect(j: Job):
    """All the job's audio, or the exception it got."""
    chunks = []
    while (item := await j.get()) is not DONE:
        if isinstance(item, BaseException):
            return item
        chunks.append(item)
    return np.concatenate(chunks)


def run(api, make_jobs, max_batch=8, during=None):
    """Queue every job before the scheduler starts (so the first batch is deterministic) and collect."""
    metrics = Metrics()
    scheduler = Scheduler(api, metrics, max_batch=max_batch, batch_wait=0.0)

    async def main():
        jobs = make_jobs(asyncio.get_running_loop())
        for j in jobs:
            scheduler.submit(j)
        scheduler.start()
        if during is not None:
            await during(jobs, scheduler)
        return await asyncio.gather(*(collect(j) for j in jobs))

    try:
        return asyncio.run(main()), metrics
    finally:
        scheduler.stop()


def alone(api, j: Job) -> np.ndarray:
    return api.generate([j.request], j.config)[0]


def batches(metrics) -> list[float]:
    """[number of batches, requests in them]."""
    samples = {s.name: s.value for s in metrics.batch_size.collect()[0].samples}
    return [samples["unimoe_batch_size_count"], samples["unimoe_batch_size_sum"]]


def test_speech_and_music_share_one_batch_and_each_gets_its_own_audio(api):
    made = []

    def jobs(loop):
        made[:] = [job(api, loop, "tts"), job(api, loop, "t2m", duration=0.4), job(api, loop, "t2m", duration=1.0)]
        return made

    results, metrics = run(api, jobs)
    assert batches(metrics) == [1, 3]
    for j, wave in zip(made, results):
        assert np.array_equal(wave, alone(api, j))
    assert len(results[1]) == (20 - 1) * 320 and len(results[2]) == (50 - 1) * 320


def test_different_sampling_settings_wait_for_their_own_batch(api):
    results, metrics = run(api, lambda loop: [job(api, loop, "tts", seed=1), job(api, loop, "tts", seed=2),
                                              job(api, loop, "tts", seed=1)])
    assert batches(metrics) == [2, 3]  # seeds 1 and 1 together, seed 2 alone


def test_max_batch_bounds_a_batch(api):
    _, metrics = run(api, lambda loop: [job(api, loop, "tts") for _ in range(5)], max_batch=2)
    assert batches(metrics) == [3, 5]


def test_a_failing_request_fails_alone(api):
    made = []

    def jobs(loop):  # 25 s of music does not fit this model's positions; the speech does
        made[:] = [job(api, loop, "tts"), job(api, loop, "t2m", duration=25.0), job(api, loop, "tts")]
        return made

    results, metrics = run(api, jobs)
    assert isinstance(results[1], UniMoEError) and "positions" in str(results[1])
    assert np.array_equal(results[0], alone(api, made[0])) and np.array_equal(results[2], alone(api, made[2]))
    assert batches(metrics) == [4, 6]  # the batch of 3 failed before any audio; then one by one


def test_a_cancelled_request_leaves_the_batch_and_the_others_are_unchanged(api):
    made = []

    def jobs(loop):
        made[:] = [job(api, loop, "t2m", chunk_frames=25, duration=20.0), job(api, loop, "t2m", duration=2.0)]
        return made

    async def cancel_after_first_chunk(jobs, _):
        first = await jobs[0].get()
        assert isinstance(first, np.ndarray)
        jobs[0].cancel()

    results, metrics = run(api, jobs, during=cancel_after_first_chunk)
    assert isinstance(results[0], asyncio.CancelledError)
    assert np.array_equal(results[1], alone(api, made[1]))
    frames = metrics.frames.collect()[0].samples[0].value
    assert frames < 1000 + 100  # the 20 s row stopped long before its 1000 frames


def test_a_request_arriving_while_a_batch_runs_joins_it_between_steps(api):
    """Continuous batching: speech submitted while music decodes joins the running batch (no
    second batch opens) and gets exactly the audio it gets alone."""
    late = []

    async def submit_late(jobs, scheduler):
        assert isinstance(await jobs[0].get(), np.ndarray)  # the music is decoding
        late.append(job(api, asyncio.get_running_loop(), "tts"))
        scheduler.submit(late[0])
        late.append(await collect(late[0]))

    results, metrics = run(api, lambda loop: [job(api, loop, "t2m", chunk_frames=5, duration=3.0)], during=submit_late)
    assert isinstance(results[0], np.ndarray)
    assert metrics.joined.collect()[0].samples[0].value == 1 and batches(metrics) == [1, 1]
    assert np.array_equal(late[1], alone(api, late[0]))


def test_a_request_cancelled_while_waiting_never_runs(api):
    def jobs(loop):
        made = [job(api, loop, "tts"), job(api, loop, "tts")]
        made[0].cancel()
        return made

    results, metrics = run(api, jobs)
    assert isinstance(results[0], asyncio.CancelledError) and isinstance(results[1], np.ndarray)
    assert batches(metrics) == [1, 1]


def test_a_running_batch_lets_go_of_each_request_as_it_ends(api, monkeypatch):
    """A busy batch outlives many requests: each one's job (its request, audio and frames with it)
    is let go when it ends, not when the batch does."""
    loop = asyncio.new_event_loop()
    jobs = [job(api, loop, "t2m", duration=0.2), job(api, loop, "t2m", duration=1.0)]
    short = weakref.ref(jobs[0])
    released = []  # per step: whether the short request's job was let go
    decoding = api.generator.decoding

    def watched(*args, **kwargs):
        batch = decoding(*args, **kwargs)
        step = batch.step

        def watched_step():
            released.append(short() is None)
            return step()

        batch.step = watched_step
        return batch

    monkeypatch.setattr(api.generator, "decoding", watched)
    try:
        Scheduler(api, Metrics())._decode(jobs)
    finally:
        loop.close()
    assert not released[0] and released[-1] and jobs == []


def streamed_alone(api, j: Job) -> np.ndarray:
    return np.concatenate(list(api.stream(j.request, j.config, chunk_frames=j.chunk_frames)))


def test_chunks_due_at_the_same_step_are_decoded_together_each_as_alone(api, monkeypatch):
    made, sizes, decode = [], [], api.codec.decode

    def jobs(loop):
        made[:] = [job(api, loop, "t2m", chunk_frames=5, duration=0.6), job(api, loop, "tts", chunk_frames=5)]
        return made

    monkeypatch.setattr(api.codec, "decode", lambda codes: sizes.append(len(codes)) or decode(codes))
    results, _ = run(api, jobs)
    assert max(sizes) == 2  # the two requests opened the batch together, so their chunks fall due together
    for j, wave in zip(made, results):
        assert np.array_equal(wave, streamed_alone(api, j))


def test_a_chunk_that_fails_to_decode_fails_only_its_request(api, monkeypatch):
    """The whole 20-frame clip of one request and the first 20-frame chunk of another fall due at
    the same step, and the clip's codes make the codec fail."""
    made, sizes, decode = [], [], api.codec.decode
    poisoned = job(api, None, "t2m", duration=0.4)
    clip = api.generator.run([poisoned.request], poisoned.config)[0]  # the codes it will have (greedy)

    def jobs(loop):
        made[:] = [job(api, loop, "t2m", duration=0.4),
                   job(api, loop, "t2m", chunk_frames=20, duration=1.0, caption="a waltz")]
        return made

    def failing(codes):
        sizes.append(len(codes))
        if any(torch.equal(c, clip) for c in codes):
            raise UniMoEError("these codes do not decode")
        return decode(codes)

    monkeypatch.setattr(api.codec, "decode", failing)
    results, _ = run(api, jobs)
    monkeypatch.setattr(api.codec, "decode", decode)
    assert sizes[:3] == [2, 1, 1]  # together, then each alone
    assert isinstance(results[0], UniMoEError)
    assert np.array_equal(results[1], streamed_alone(api, made[1]))
