"""The one error hierarchy of jupyter_cancel."""

from __future__ import annotations

from typing import Any, Protocol

from .model import describe


class _Stopped(Protocol):
    """What a ``Cancelled`` reads of the operation it is about (an ``Operation``)."""

    name: str
    message: str | None


class JupyterCancelError(Exception):
    """Base of every error jupyter_cancel raises on purpose."""


class Cancelled(BaseException):
    """Raised into the code that waited on an operation that was cancelled, and into a cell
    that was stopped.

    Carries ``.reason`` and ``.operation``. In IPython it renders as one line. A
    ``BaseException``, as ``KeyboardInterrupt``, ``asyncio.CancelledError`` (since Python 3.8)
    and trio's ``Cancelled`` are: a stop is not an error of the code it stops, and an
    ``except Exception:`` written for errors (a retry loop, a "log and go on") must not swallow
    it. Catch it by name (``except jc.Cancelled``) to clean up or keep partial results.
    """

    def __init__(self, operation: _Stopped | None, reason: str, *, name: str | None = None) -> None:
        self.operation = operation
        self.reason = reason
        self.message: str | None = operation.message if operation is not None else None
        name = operation.name if operation is not None else name or "operation"
        words = describe(reason)
        text = words if self.message is None else f"{words} ({self.message})"
        super().__init__(f"{name} — {text}")

    def _render_traceback_(self) -> list[str]:
        # IPython calls this instead of printing a traceback: one line that reads as the stop
        # it was ("Stopped: make -j4 — by you"), in the words the widget and the panel use.
        return [f"\x1b[0;33mStopped:\x1b[0m {self.args[0]}"]

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (None, self.reason))


class UnkillableError(JupyterCancelError):
    """Some processes of a tree survived SIGKILL (uninterruptible sleep)."""
