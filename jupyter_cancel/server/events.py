"""What the server tells about operations: the metrics, Jupyter's event bus (one schema) and
the REST event streams (listeners), from every kernel's events alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import metrics

EVENT_SCHEMA = "https://github.com/jupyter-cancel/jupyter_cancel/events/operation/v1"
Listener = Callable[[dict[str, Any]], None]


class OperationEvents:
    """One kernel event in, every consumer served; a listener that raises is dropped."""

    def __init__(self, event_logger: Any, log: Any) -> None:
        self.event_logger = event_logger
        self.log = log
        self.listeners: set[Listener] = set()

    def emit(self, kernel_id: str, event: str, data: dict[str, Any]) -> None:
        _count(event, data)
        if event in ("started", "cancel_requested", "ended") and self.event_logger is not None:
            try:
                self.event_logger.emit(schema_id=EVENT_SCHEMA, data=_event_record(kernel_id, event, data))
            except Exception:
                self.log.debug("event not emitted", exc_info=True)
        message = {"event": event, "kernel_id": kernel_id, "operation": public_view(data)}
        for listener in list(self.listeners):
            try:
                listener(message)
            except Exception:
                self.listeners.discard(listener)


def _count(event: str, data: dict[str, Any]) -> None:
    """The Prometheus metrics an event moves."""
    if event == "cancel_requested":
        metrics.CANCEL_REQUESTS.labels(str(data.get("reason"))).inc()
    elif event == "ended":
        metrics.ENDED.labels(str(data.get("state")), str(data.get("reason") or "")).inc()
        if isinstance(data.get("cancel_latency"), (int, float)):
            metrics.CANCEL_LATENCY.observe(data["cancel_latency"])
        used = data.get("resources")
        if isinstance(used, dict):
            if isinstance(used.get("peak_rss"), (int, float)) and used["peak_rss"] > 0:
                metrics.PEAK_RSS.observe(used["peak_rss"])
            if isinstance(used.get("cpu_seconds"), (int, float)) and used["cpu_seconds"] >= 0:
                metrics.CPU_SECONDS.inc(used["cpu_seconds"])


def public_view(data: dict[str, Any]) -> dict[str, Any]:
    """Operation JSON as clients see it: no process identities, no bookkeeping keys."""
    return {k: v for k, v in data.items() if k not in ("root", "cgroup") and not k.startswith("_")}


def _event_record(kernel_id: str, event: str, data: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {"action": event, "kernel_id": kernel_id, "operation_id": data.get("id")}
    for key in (
        "name",
        "kind",
        "cell_id",
        "client_session",
        "policy",
        "state",
        "reason",
        "message",
        "exit_code",
    ):
        if key in data:
            record[key] = data[key]
    if event == "ended":
        record["duration"] = data.get("duration")
        record["cancel_latency"] = data.get("cancel_latency")
    return record
