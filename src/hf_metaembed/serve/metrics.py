"""The server's Prometheus metrics (`GET /metrics`), in a registry of its own per app: request counts by route and
status, request latency, model batch sizes (inputs and padded tokens), queue depth and inputs served. With
`--workers N` each worker process counts its own requests; a scrape reads the worker that answers it."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TOKEN_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)


class ServerMetrics:
    """Every metric the server exports, registered in `registry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "hf_metaembed_requests",
            "HTTP requests answered, by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "hf_metaembed_request_seconds",
            "time to answer a request, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_inputs = Histogram(
            "hf_metaembed_batch_inputs", "inputs per model batch", buckets=BATCH_BUCKETS, registry=self.registry
        )
        self.batch_tokens = Histogram(
            "hf_metaembed_batch_padded_tokens",
            "padded tokens per model batch (the widest backbone)",
            buckets=TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "hf_metaembed_queue_depth", "inputs waiting or running in the batcher", registry=self.registry
        )
        self.inputs = Counter("hf_metaembed_inputs", "inputs computed", registry=self.registry)
        self.rejected = Counter(
            "hf_metaembed_queue_full", "requests refused with 503 because the queue was full", registry=self.registry
        )

    def observe_batch(self, inputs: int, padded_tokens: float) -> None:
        self.batch_inputs.observe(inputs)
        self.batch_tokens.observe(padded_tokens)
        self.inputs.inc(inputs)


__all__ = ["ServerMetrics"]
