"""Prometheus metrics, served on the server's /metrics with its own."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

ENDED = Counter(
    "jupyter_cancel_operations_ended_total",
    "Operations that ended, by final state and cancel reason.",
    ["state", "reason"],
)
CANCEL_REQUESTS = Counter("jupyter_cancel_cancel_requests_total", "Cancel requests by reason.", ["reason"])
CANCEL_LATENCY = Histogram(
    "jupyter_cancel_cancel_latency_seconds",
    "From a cancel request to the operation's whole tree being gone.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PEAK_RSS = Histogram(
    "jupyter_cancel_operation_peak_rss_bytes",
    "Peak resident memory of an ended operation's tree (operations sampled while shown).",
    buckets=(2**20, 2**24, 2**26, 2**28, 2**30, 2**32, 2**34),
)
CPU_SECONDS = Counter(
    "jupyter_cancel_operation_cpu_seconds_total",
    "CPU seconds used by ended operations' trees (operations sampled while shown).",
)
RUNNING = Gauge("jupyter_cancel_running_operations", "Operations running now, all kernels.")
UNKILLABLE = Gauge(
    "jupyter_cancel_unkillable_operations",
    "Operations with processes that survived SIGKILL (uninterruptible sleep) and still exist.",
)


def bind(running: Callable[[], float], unkillable: Callable[[], float]) -> None:
    """The gauges read the tracker's view when scraped: they cannot drift from it."""
    RUNNING.set_function(running)
    UNKILLABLE.set_function(unkillable)
