"""Prometheus metrics of one server (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

OUTCOMES = ("ok", "invalid", "rejected", "cancelled", "failed")  # 2xx, 4xx, 429, client gone, 5xx


class Metrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("unimoe_requests", "generation requests by endpoint and outcome "
                                f"({', '.join(OUTCOMES)})", ["endpoint", "outcome"], registry=r)
        self.latency = Histogram("unimoe_request_seconds", "time from arrival to the last byte of audio, by endpoint",
                                 ["endpoint"], buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120), registry=r)
        self.first_chunk = Histogram("unimoe_first_chunk_seconds", "time from arrival to the first streamed audio",
                                     buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10), registry=r)
        self.queue_depth = Gauge("unimoe_queue_depth", "requests waiting for a batch", registry=r)
        self.batch_rows = Gauge("unimoe_batch_rows", "requests decoding in the running batch", registry=r)
        self.batch_size = Histogram("unimoe_batch_size", "requests in a batch when it opens",
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32), registry=r)
        self.joined = Counter("unimoe_joined", "requests that joined a running batch between decode steps", registry=r)
        self.frames = Counter("unimoe_frames", "audio frames generated (all requests)", registry=r)
        self.frames_per_second = Gauge("unimoe_frames_per_second", "frames generated per second over the last batch",
                                       registry=r)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
