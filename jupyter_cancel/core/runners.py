"""What runs an operation: a process tree, a cooperative scope, or an asyncio task."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import psutil

from .cgroup import Cgroup
from .errors import Cancelled
from .model import State
from .proctree import Tree

if TYPE_CHECKING:
    import subprocess

    from .operation import Operation

log = logging.getLogger(__name__)


class Runner(Protocol):
    def pids(self) -> list[int]: ...

    def request_cancel(self, op: Operation) -> None:
        """Ask the work to stop; return without waiting for it."""

    def wait_gone(self, op: Operation, timeout: float) -> bool:
        """Block until the work stopped (or ``timeout``); True if it did."""


class ProcessRunner:
    """A process tree rooted at a ``Popen`` in its own session. Terminated in batches."""

    def __init__(self, popen: subprocess.Popen[bytes], tree: Tree) -> None:
        self.popen = popen
        self.tree = tree

    @property
    def cgroup(self) -> Cgroup | None:
        return self.tree.cgroup

    def pids(self) -> list[int]:
        return sorted(self.tree.collect())

    def identity(self) -> dict[str, Any]:
        root = self.tree.root
        try:
            ident = [root.pid, root.create_time()] if root is not None else None
        except psutil.Error:
            ident = None
        return {"root": ident, "cgroup": self.cgroup.path if self.cgroup is not None else None}

    def request_cancel(self, op: Operation) -> None:
        # Process trees are terminated by the registry, all cancelled trees together.
        pass

    def wait_gone(self, op: Operation, timeout: float) -> bool:
        return op.wait(timeout).done


class CancelScope:
    """Cooperative cancellation for in-process work (threads, blocking clients).

    ``cancelled`` turns True when a cancel is requested; ``raise_if_cancelled()`` raises
    ``Cancelled``; ``on_cancel(cb)`` callbacks run once, in the cancelling thread, so a
    blocking read can be unblocked (close its socket). Use as a context manager: leaving
    the block ends the operation (``cancelled``, ``failed`` or ``completed``).
    """

    def __init__(self, op: Operation, enter: Callable[[CancelScope], None]) -> None:
        self.operation = op
        self._enter = enter
        self._callbacks: list[Callable[[], Any]] = []
        self._lock = threading.Lock()
        self._thread: int | None = None
        self._exited = threading.Event()

    # -- the scope's side ---------------------------------------------------------
    @property
    def cancelled(self) -> bool:
        return self.operation.cancel_requested

    @property
    def reason(self) -> str | None:
        return self.operation.reason

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
        elif exc is not None:
            state = State.FAILED
            op.error = repr(exc)
        else:
            state = State.COMPLETED
        op._registry._finish(op, state)
        self._exited.set()

    # -- the canceller's side -----------------------------------------------------
    def pids(self) -> list[int]:
        return []

    def request_cancel(self, op: Operation) -> None:
        with self._lock:
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            _call(callback)

    def wait_gone(self, op: Operation, timeout: float) -> bool:
        if self._thread == threading.get_ident():
            return False  # cancelled from inside the scope: it ends when the block exits
        return self._exited.wait(timeout)


class TaskRunner:
    """An asyncio task registered as an operation; cancelled thread-safely."""

    def __init__(self, task: asyncio.Task[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.task = task
        self.loop = loop
        self._gone = threading.Event()

    def pids(self) -> list[int]:
        return []

    def attach(self, op: Operation) -> None:
        def done(task: asyncio.Task[Any]) -> None:
            if task.cancelled() or op.cancel_requested:
                state = State.CANCELLED
            elif task.exception() is not None:
                state = State.FAILED
                op.error = repr(task.exception())
            else:
                state = State.COMPLETED
            op._registry._finish(op, state)
            self._gone.set()

        self.task.add_done_callback(done)

    def request_cancel(self, op: Operation) -> None:
        msg = f"jupyter_cancel: {op.reason}"
        try:
            self.loop.call_soon_threadsafe(self.task.cancel, msg)
        except RuntimeError:
            pass  # loop closed: the task is gone with it

    def wait_gone(self, op: Operation, timeout: float) -> bool:
        try:
            on_loop = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            return False  # waiting here would block the loop the task needs
        return self._gone.wait(timeout)


def _call(callback: Callable[[], Any]) -> None:
    try:
        callback()
    except Exception:
        log.exception("on_cancel callback %r failed", callback)


def root_identity(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None
