"""The ``jupyter_cancel_request`` control-channel message: answered while a cell is busy.

Content: ``{"action": "cancel" | "list", "operation_ids"?, "cell_id"?, "client_session"?,
"all"?, "reason"?}``. Reply ``jupyter_cancel_reply``: ``{"status": "ok", "cancelled",
"operations"}`` or ``{"status": "error", "ename", "evalue"}``. Nothing a client sends can
raise out of the handler.
"""

from __future__ import annotations

import logging
from typing import Any

from ..core.model import Reason, to_reason
from ..core.registry import Registry

log = logging.getLogger(__name__)

REQUEST = "jupyter_cancel_request"
REPLY = "jupyter_cancel_reply"
#: iopub message carrying one operation change: {"event", "operation"}.
EVENT = "jupyter_cancel_event"
_KEYS = {"action", "operation_ids", "cell_id", "client_session", "all", "reason", "wait"}


def _str_or_none(content: dict[str, Any], key: str) -> str | None:
    value = content.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key} must be a string, not {type(value).__name__}")
    return value


def handle(registry: Registry, content: Any) -> dict[str, Any]:
    """Serve one request; always returns a reply content, never raises."""
    try:
        return _handle(registry, content)
    except (ValueError, TypeError, KeyError) as err:
        return {"status": "error", "ename": type(err).__name__, "evalue": str(err)}
    except Exception as err:  # a bug here must not take the kernel down
        log.exception("jupyter_cancel_request failed")
        return {"status": "error", "ename": type(err).__name__, "evalue": str(err)}


def _handle(registry: Registry, content: Any) -> dict[str, Any]:
    if not isinstance(content, dict):
        raise TypeError(f"content must be an object, not {type(content).__name__}")
    unknown = set(content) - _KEYS
    if unknown:
        raise ValueError(f"unknown keys: {sorted(unknown)}")
    action = content.get("action")
    if action not in ("cancel", "list"):
        raise ValueError(f"action must be 'cancel' or 'list', not {action!r}")
    cancelled: list[str] = []
    if action == "cancel":
        reason = to_reason(content.get("reason", Reason.USER))
        wait = content.get("wait", True)
        if not isinstance(wait, bool):
            raise ValueError("wait must be a boolean")
        ids = content.get("operation_ids")
        cell_id = _str_or_none(content, "cell_id")
        client_session = _str_or_none(content, "client_session")
        everything = content.get("all", False)
        if not isinstance(everything, bool):
            raise ValueError("all must be a boolean")
        if ids is not None:
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise ValueError("operation_ids must be a list of strings")
            for op_id in ids:
                # An id we do not know yet may be registering right now: remember it.
                cancelled += [op.id for op in registry.cancel(op_id, reason, wait=wait, remember=True)]
        elif cell_id is not None or client_session is not None or everything:
            filters: dict[str, Any] = {}
            if cell_id is not None:
                filters["cell_id"] = cell_id
            if client_session is not None:
                filters["client_session"] = client_session
            cancelled = [op.id for op in registry.cancel_where(reason, wait=wait, **filters)]
        else:
            raise ValueError("cancel needs operation_ids, cell_id, client_session or all")
    operations = [op.to_json() for op in registry.operations(include_done=True)]
    return {"status": "ok", "cancelled": cancelled, "operations": operations}
