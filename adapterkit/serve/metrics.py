"""Prometheus metrics of one engine (and its server), in their own registry so several engines in
one process (tests, benchmarks) never collide."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ServeMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("adapterkit_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.request_seconds = Histogram("adapterkit_request_seconds", "HTTP request latency", ["route"],
                                         buckets=_LATENCY, registry=r)
        self.inputs = Counter("adapterkit_inputs", "Inputs predicted, by outcome", ["outcome"], registry=r)
        self.batch_size = Histogram("adapterkit_batch_size", "Rows per model step",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.batch_adapters = Histogram("adapterkit_batch_adapters", "Distinct adapters per model step",
                                        buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.queue_depth = Gauge("adapterkit_queue_depth", "Inputs waiting for a model step", registry=r)
        self.queue_seconds = Histogram("adapterkit_queue_seconds", "Time an input waits before its model step",
                                       buckets=_LATENCY, registry=r)
        self.tokenize_seconds = Histogram("adapterkit_tokenize_seconds", "Tokenization time per input",
                                          buckets=_LATENCY, registry=r)
        self.step_seconds = Histogram("adapterkit_step_seconds", "Model step time (one forward over a batch)",
                                      buckets=_LATENCY, registry=r)
        self.load_seconds = Histogram("adapterkit_adapter_load_seconds", "Time to load an adapter into the model",
                                      buckets=_LATENCY, registry=r)
        self.cache = Counter("adapterkit_cache", "Resident-adapter cache events (hit, miss, eviction)", ["event"],
                             registry=r)
        self.resident = Gauge("adapterkit_resident_adapters", "Adapters resident in the model", registry=r)
        self.resident_bytes = Gauge("adapterkit_resident_adapter_bytes", "Bytes of resident adapter and head weights",
                                    registry=r)
        self.registered = Gauge("adapterkit_registered_adapters", "Adapters the engine can serve", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
