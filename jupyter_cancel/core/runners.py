"""What runs an operation: the runner protocol, process trees and asyncio tasks (cooperative
scopes are in ``scope``)."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Any, Protocol

import psutil

from .cgroup import Cgroup
from .model import State
from .proctree import Tree

if TYPE_CHECKING:
    import subprocess

    from .operation import Operation

log = logging.getLogger(__name__)


class Runner(Protocol):
    """What runs an operation's work, as the registry sees it. The registry alone changes an
    operation's state; a runner reports an end with ``op.registry.finish(op, state)``.

    Process trees (``ProcessRunner``) are terminated by the registry itself, all cancelled
    trees in one pass; every other runner stops its work through ``request_cancel``.
    """

    def pids(self) -> list[int]:
        """Live pids of the work (empty for in-process work)."""

    def identity(self) -> dict[str, Any]:
        """What lets another process end the work safely if this one cannot (a process tree's
        root as [pid, create_time] and its cgroup); empty for in-process work."""

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


class TaskRunner:
    """An asyncio task registered as an operation; cancelled thread-safely."""

    def __init__(self, task: asyncio.Task[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.task = task
        self.loop = loop
        self._gone = threading.Event()

    def pids(self) -> list[int]:
        return []

    def identity(self) -> dict[str, Any]:
        return {}

    def watch(self, op: Operation) -> None:
        """Report the task's end to the registry."""

        def done(task: asyncio.Task[Any]) -> None:
            if task.cancelled() or op.cancel_requested:
                state = State.CANCELLED
            elif task.exception() is not None:
                state = State.FAILED
                op.error = repr(task.exception())
            else:
                state = State.COMPLETED
            op.registry.finish(op, state)
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


def root_identity(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None
