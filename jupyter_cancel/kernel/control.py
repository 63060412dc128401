"""The kernel's side of the ``jupyter_cancel_request`` control-channel message (the wire:
``protocol.py``): answered while a cell is busy. Nothing a client sends can raise out of the
handler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..core.model import CancelReason, Reason, short, to_text
from ..core.registry import Registry
from ..core.selector import FIELDS, Selector
from ..protocol import ACTIONS, OUTPUT_TAIL

log = logging.getLogger(__name__)

_MAX_ERROR = 300
_KEYS = {"action", "reason", "wait", "to", "msg_id", *FIELDS}
#: ``stop_cell(cell_id, reason)`` → whether that cell was running (and was stopped).
StopCell = Callable[[str, str], bool]
#: ``skip(msg_id, reason)``: the execute request ``msg_id``, still queued, runs no code.
Skip = Callable[[str, str], None]


def handle(
    registry: Registry, content: Any, stop_cell: StopCell | None = None, skip: Skip | None = None
) -> dict[str, Any]:
    """Serve one request; always returns a reply content, never raises."""
    try:
        return _handle(registry, content, stop_cell, skip)
    except (ValueError, TypeError, KeyError) as err:
        return {"status": "error", "ename": type(err).__name__, "evalue": str(err)[:_MAX_ERROR]}
    except Exception as err:  # a bug here must not take the kernel down
        log.exception("jupyter_cancel_request failed")
        return {"status": "error", "ename": type(err).__name__, "evalue": short(str(err))}


class _Request:
    """One request: its content, and the kernel's two cell hooks."""

    def __init__(self, content: dict[str, Any], stop_cell: StopCell | None, skip: Skip | None) -> None:
        self.content = content
        self.stop_cell = stop_cell
        self.skip = skip

    def reason(self) -> CancelReason:
        """The request's reason, typed (the source set by the mechanism that sent it)."""
        return CancelReason.from_json(self.content.get("reason", Reason.USER))


def _handle(
    registry: Registry, content: Any, stop_cell: StopCell | None, skip: Skip | None
) -> dict[str, Any]:
    if not isinstance(content, dict):
        raise TypeError(f"content must be an object, not {type(content).__name__}")
    unknown = set(content) - _KEYS
    if unknown:
        raise ValueError(f"unknown keys: {short(sorted(unknown))}")
    action = content.get("action")
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {short(action)}")
    return _SERVE[action](registry, _Request(content, stop_cell, skip))


def _listing(registry: Registry, **extra: Any) -> dict[str, Any]:
    """The usual reply: every operation (ended ones too), with ``extra``."""
    operations = [op.to_json() for op in registry.operations(include_done=True)]
    return {"status": "ok", "cancelled": [], **extra, "operations": operations}


def _health(registry: Registry, request: _Request) -> dict[str, Any]:
    return {"status": "ok", **registry.health()}


def _output(registry: Registry, request: _Request) -> dict[str, Any]:
    ids = Selector.from_json(request.content).operation_ids or ()
    if len(ids) != 1:
        raise ValueError("output needs operation_ids naming one operation")
    return {"status": "ok", "output": registry.get(ids[0]).output[-OUTPUT_TAIL:]}


def _resources(registry: Registry, request: _Request) -> dict[str, Any]:
    live = [op for op in registry.operations() if op.kind == "process"]
    sampled = {op.id: op.sample_resources() for op in live}
    return {"status": "ok", "resources": {k: v for k, v in sampled.items() if v is not None}}


def _reassign(registry: Registry, request: _Request) -> dict[str, Any]:
    old = to_text(request.content.get("client_session"), "client_session")
    new = to_text(request.content.get("to"), "to")
    return {"status": "ok", "moved": [op.id for op in registry.reassign(old, new)]}


def _stop_cell(registry: Registry, request: _Request) -> dict[str, Any]:
    selector = Selector.from_json(request.content)
    if not isinstance(selector.cell_id, str) or selector != Selector(cell_id=selector.cell_id):
        raise ValueError("stop_cell needs cell_id (and no other selector)")
    reason = request.reason()
    msg_id = request.content.get("msg_id")
    if msg_id is not None:
        msg_id = to_text(msg_id, "msg_id")
    # The operations are marked first (an end of their work now reads as their cancel: the
    # cell's own cleanup may kill its child), the Python stopped next, the work ended last
    # (ended first, a cell waiting on it would go on to its next line before the raise).
    chosen = registry.request_cancel(registry.select(selector), reason)
    running = request.stop_cell(selector.cell_id, reason.words()) if request.stop_cell is not None else False
    cancelled = [op.id for op in registry.end_requested(chosen, wait=False)]
    # Not the cell running now, and its request is known: a queued run of it (Run All).
    skipped = not running and msg_id is not None and request.skip is not None
    if skipped:
        request.skip(msg_id, reason.words())
    return {**_listing(registry, running=running, skipped=skipped), "cancelled": cancelled}


def _cancel(registry: Registry, request: _Request) -> dict[str, Any]:
    reason = request.reason()
    wait = request.content.get("wait", True)
    if not isinstance(wait, bool):
        raise ValueError("wait must be a boolean")
    selector = Selector.from_json(request.content)
    if selector.empty:
        raise ValueError("cancel needs operation_ids, cell_id, client_session or all")
    cancelled: list[str] = []
    if selector.operation_ids is not None:
        for op_id in selector.operation_ids:
            # An id we do not know yet may be registering right now: remember it.
            cancelled += [op.id for op in registry.cancel(op_id, reason, wait=wait, remember=True)]
    else:
        cancelled = [op.id for op in registry.cancel_where(selector, reason, wait=wait)]
    return {**_listing(registry), "cancelled": cancelled}


def _list(registry: Registry, request: _Request) -> dict[str, Any]:
    return _listing(registry)


_SERVE: dict[str, Callable[[Registry, _Request], dict[str, Any]]] = {
    "health": _health,
    "output": _output,
    "resources": _resources,
    "reassign": _reassign,
    "stop_cell": _stop_cell,
    "cancel": _cancel,
    "list": _list,
}
assert set(_SERVE) == set(ACTIONS)
