"""``CancelScope``: cooperative cancellation for in-process work (threads, blocking clients)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import Cancelled
from .model import State

if TYPE_CHECKING:
    from .operation import Operation

log = logging.getLogger(__name__)


class CancelScope:
    """A block of in-process work that a cancel can reach.

    Semantics (after trio's ``CancelScope``, with one difference noted):

    * A cancel only *requests*: ``cancel_called`` turns True at once, callbacks given to
      ``on_cancel`` run once in the cancelling thread (close a socket to unblock a read), and
      the code inside sees it at its next ``raise_if_cancelled()`` (``jc.progress`` steps call
      it for you). Nothing is injected into the block's thread.
    * A cancel that arrives before the block is entered is kept: entering registers the
      operation, ``cancel_called`` is already True, and the first check raises.
    * ``cancelled_caught`` is True if the block ended with this scope's own ``Cancelled``.
      Unlike trio, that ``Cancelled`` is *not* swallowed: it propagates, so a notebook cell
      stops there and shows one line.
    * Leaving the block ends the operation: ``cancelled`` if a cancel was called, ``failed``
      if the block raised anything else, ``completed`` otherwise. Calling ``cancel`` again,
      or after the end, does nothing (idempotent).
    """

    def __init__(self, op: Operation, enter: Callable[[CancelScope], None]) -> None:
        self.operation = op
        self.cancelled_caught = False
        self._enter = enter
        self._callbacks: list[Callable[[], Any]] = []
        self._lock = threading.Lock()
        self._thread: int | None = None
        self._exited = threading.Event()

    # -- the scope's side ---------------------------------------------------------
    @property
    def cancel_called(self) -> bool:
        """A cancel was requested (it may not have taken effect yet)."""
        return self.operation.cancel_requested

    @property
    def cancelled(self) -> bool:
        """Same as ``cancel_called`` (the name ``jc.scope`` users know)."""
        return self.operation.cancel_requested

    @property
    def reason(self) -> str | None:
        return self.operation.reason

    def cancel(self, reason: str = "user") -> None:
        """Request the cancel of this scope (from any thread)."""
        # remember: a scope not entered yet is not registered yet; its cancel waits for it.
        self.operation.registry.cancel(self.operation.id, reason, wait=False, remember=True)

    def raise_if_cancelled(self) -> None:
        if self.operation.cancel_requested:
            raise Cancelled(self.operation, self.operation.reason or "cancelled")

    def on_cancel(self, callback: Callable[[], Any]) -> None:
        """Run ``callback()`` on cancel (at once if already cancelled)."""
        with self._lock:
            if not self.operation.cancel_requested:
                self._callbacks.append(callback)
                return
        _call(callback)

    def __enter__(self) -> CancelScope:
        self._thread = threading.get_ident()
        self._enter(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        op = self.operation
        if op.cancel_requested:
            state = State.CANCELLED
            self.cancelled_caught = isinstance(exc, Cancelled) and exc.operation is op
        elif exc is not None:
            state = State.FAILED
            op.error = repr(exc)
        else:
            state = State.COMPLETED
        op.registry.finish(op, state)
        self._exited.set()

    # -- the runner protocol (the registry's side) ----------------------------------
    def pids(self) -> list[int]:
        return []

    def identity(self) -> dict[str, Any]:
        return {}

    def request_cancel(self, op: Operation) -> None:
        with self._lock:
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            _call(callback)

    def wait_gone(self, op: Operation, timeout: float) -> bool:
        if self._thread == threading.get_ident():
            return False  # cancelled from inside the scope: it ends when the block exits
        return self._exited.wait(timeout)


def _call(callback: Callable[[], Any]) -> None:
    try:
        callback()
    except (Exception, Cancelled):
        log.exception("on_cancel callback %r failed", callback)
