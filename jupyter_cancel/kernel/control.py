"""The ``jupyter_cancel_request`` control-channel message: answered while a cell is busy.

Content: ``{"action": "cancel" | "list" | "health", "operation_ids"?, "cell_id"?, "client_session"?,
"all"?, "reason"?}``. Reply ``jupyter_cancel_reply``: ``{"status": "ok", "cancelled",
"operations"}`` or ``{"status": "error", "ename", "evalue"}``. Nothing a client sends can
raise out of the handler.
"""

from __future__ import annotations

import logging
from typing import Any

from ..core.model import Reason, short, to_reason
from ..core.registry import Registry
from ..core.selector import FIELDS, Selector

log = logging.getLogger(__name__)

REQUEST = "jupyter_cancel_request"
REPLY = "jupyter_cancel_reply"
#: iopub message carrying one operation change: {"event", "operation"}.
EVENT = "jupyter_cancel_event"
_MAX_ERROR = 300
_KEYS = {"action", "reason", "wait", *FIELDS}


def handle(registry: Registry, content: Any) -> dict[str, Any]:
    """Serve one request; always returns a reply content, never raises."""
    try:
        return _handle(registry, content)
    except (ValueError, TypeError, KeyError) as err:
        return {"status": "error", "ename": type(err).__name__, "evalue": str(err)[:_MAX_ERROR]}
    except Exception as err:  # a bug here must not take the kernel down
        log.exception("jupyter_cancel_request failed")
        return {"status": "error", "ename": type(err).__name__, "evalue": short(str(err))}


def _handle(registry: Registry, content: Any) -> dict[str, Any]:
    if not isinstance(content, dict):
        raise TypeError(f"content must be an object, not {type(content).__name__}")
    unknown = set(content) - _KEYS
    if unknown:
        raise ValueError(f"unknown keys: {short(sorted(unknown))}")
    action = content.get("action")
    if action not in ("cancel", "list", "health"):
        raise ValueError(f"action must be 'cancel', 'list' or 'health', not {short(action)}")
    if action == "health":
        return {"status": "ok", **registry.health()}
    cancelled: list[str] = []
    if action == "cancel":
        reason = to_reason(content.get("reason", Reason.USER))
        wait = content.get("wait", True)
        if not isinstance(wait, bool):
            raise ValueError("wait must be a boolean")
        selector = Selector.from_json(content)
        if selector.empty:
            raise ValueError("cancel needs operation_ids, cell_id, client_session or all")
        if selector.operation_ids is not None:
            for op_id in selector.operation_ids:
                # An id we do not know yet may be registering right now: remember it.
                cancelled += [op.id for op in registry.cancel(op_id, reason, wait=wait, remember=True)]
        else:
            cancelled = [op.id for op in registry.cancel_where(reason, wait=wait, **selector.filters())]
    operations = [op.to_json() for op in registry.operations(include_done=True)]
    return {"status": "ok", "cancelled": cancelled, "operations": operations}
