"""Prometheus metrics of the API process (prometheus-client's default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("featureviz_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "featureviz_http_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
ACTIVATION_BYTES = Counter("featureviz_activation_bytes_total", "Activation bytes served")
MODEL_CACHE = Gauge("featureviz_model_cache_events", "Model cache hits and misses", ["event"])
FUNCTION_CACHE = Gauge(
    "featureviz_function_cache_events", "Compiled-function cache hits and misses", ["event"]
)
JOBS = Gauge("featureviz_jobs", "Jobs by state", ["state"])
QUEUE_DEPTH = Gauge("featureviz_queue_depth", "Messages waiting on the gpu queue")
