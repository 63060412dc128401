"""What runs an operation: the runner protocol, process trees and asyncio tasks (cooperative
scopes are in ``scope``)."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

import psutil

from .cgroup import Cgroup
from .identity import identity_of
from .model import State
from .operation import Operation, Runner
from .proctree import Tree, child_running

if TYPE_CHECKING:
    import subprocess

#: (``Runner``, the protocol, lives with the ``Operation`` it runs; re-exported here.)
__all__ = [
    "CapturedRunner",
    "KnownTree",
    "ProcessRunner",
    "Runner",
    "TaskRunner",
    "TreeRunner",
    "exit_status",
    "root_identity",
]

log = logging.getLogger(__name__)


class TreeRunner:
    """A process tree the registry terminates itself (all cancelled trees in one pass)."""

    captured = False
    #: Its root's exit is watched (False: its owner, or a scan, says when it ends).
    watched = True

    def __init__(self, tree: Tree) -> None:
        self.tree = tree

    @property
    def cgroup(self) -> Cgroup | None:
        return self.tree.cgroup

    @property
    def pid(self) -> int | None:
        return self.tree.root.pid if self.tree.root is not None else None

    def pids(self) -> list[int]:
        return sorted(self.tree.collect())

    def identity(self) -> dict[str, Any]:
        root = self.tree.root
        try:
            ident = identity_of(root) if root is not None else None
        except psutil.Error:
            ident = None
        return {"root": ident, "cgroup": self.cgroup.path if self.cgroup is not None else None}

    def request_cancel(self, op: Operation) -> None:
        pass  # the registry terminates process trees itself

    def wait_gone(self, op: Operation, timeout: float) -> bool:
        return op.wait(timeout).done

    def poll(self) -> int | None:
        """The root's exit status if it exited (None while it runs)."""
        raise NotImplementedError

    def returncode(self, timeout: float) -> int | None:
        """The root's exit status once the tree was terminated (waiting up to ``timeout``)."""
        raise NotImplementedError


class ProcessRunner(TreeRunner):
    """A tree rooted at a ``Popen`` that ``jc.start`` made: its own session, output piped to
    the operation; the root is reaped by us."""

    def __init__(self, popen: subprocess.Popen[bytes], tree: Tree) -> None:
        super().__init__(tree)
        self.popen = popen

    def poll(self) -> int | None:
        return self.popen.poll()

    def returncode(self, timeout: float) -> int | None:
        try:
            if self.popen.returncode is None and not child_running(self.popen.pid):
                # It exited: wait for the lock the monitor may hold while it reaps, rather
                # than Popen's timed wait, which sleeps (≥ 0.5 ms) when the lock is busy.
                return self.popen.wait()
            return self.popen.wait(timeout=timeout)
        except Exception:
            return None


class KnownTree(TreeRunner):
    """A tree another owner started and reported, which this one only ends: a server ending
    the work of a kernel that stopped answering, or of a kernel without the extension. Not
    watched (that owner, or a scan, says when it ends); its root's status is not ours to read."""

    watched = False

    def poll(self) -> int | None:
        return None

    def returncode(self, timeout: float) -> int | None:
        return None


class CapturedRunner(TreeRunner):
    """A tree the process started by any other route (plain ``subprocess``, ``os.system``,
    ``fork``, a library). The root is the caller's child: we watch it and may signal it, but
    never reap it (the caller's ``wait``/``waitpid`` must still work); its status is read
    with ``WNOWAIT``. The operation lasts while any member of the tree lives."""

    captured = True

    def __init__(self, tree: Tree, popen: subprocess.Popen[Any] | None = None) -> None:
        super().__init__(tree)
        # Weak: the user's Popen must die as it would without us (``__del__``, its
        # ResourceWarning, ``subprocess._active`` reaping a child it never waited for).
        self._popen = weakref.ref(popen) if popen is not None else None
        #: The root joined its cgroup while running, so the cgroup holds what it started since.
        self.joined_alive = False

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "captured": True}

    def poll(self) -> int | None:
        pid = self.pid
        if pid is None:
            return None
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped already (by its caller): its Popen knows the status
            return self._reaped_status()
        return None if info is None else exit_status(info)

    def returncode(self, timeout: float) -> int | None:
        return self.poll()

    def _reaped_status(self) -> int | None:
        """The status its caller reaped, from the caller's ``Popen`` while it lives (None:
        unknown — a fork's child, or a ``Popen`` gone with its status)."""
        popen = self._popen() if self._popen is not None else None
        if popen is None:
            return None
        # Reaped a moment ago by the caller's thread, which may have yet to store the status
        # (read only: a wait of ours would change the caller's Popen).
        deadline = time.monotonic() + 0.05
        while popen.returncode is None and time.monotonic() < deadline:
            time.sleep(0.001)
        return popen.returncode


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


def exit_status(info: Any) -> int:
    """A ``waitid`` result as a returncode (negative: the signal that ended it)."""
    return int(info.si_status if info.si_code == os.CLD_EXITED else -info.si_status)


def root_identity(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None
