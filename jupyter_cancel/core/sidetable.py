"""One worker thread with a descriptor table of its own, for the files our background work reads.

Every ``open`` takes the lowest free descriptor number of the process. Code on the user's
thread may be juggling 0, 1 and 2 at that moment (close one, ``dup`` into it, spawn a child
that expects it): a ``/proc`` or cgroup file opened by one of our threads for a millisecond
lands on that number, and the user's next ``dup`` or pipe gets another one — CPython's own
``test_subprocess`` sees it as EBADF. On Linux this thread leaves the process's table
(``unshare(CLONE_FILES)``) and closes its copy of every descriptor: what it opens afterwards
never takes a number of the user's. (POSIX record locks belong to a descriptor table, so
closing those copies releases none of the user's locks.)

Elsewhere (or if the kernel refuses) it is an ordinary worker thread.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

log = logging.getLogger(__name__)

_CLONE_FILES = 0x00000400
T = TypeVar("T")


def _leave_shared_table() -> bool:
    """Give the calling thread a private copy of the descriptor table, then empty that copy."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(_CLONE_FILES) != 0:
            log.debug("unshare(CLONE_FILES): %s", os.strerror(ctypes.get_errno()))
            return False
    except (OSError, AttributeError):
        return False
    os.closerange(0, _MAX_FD)  # our copies only: the process's own table is untouched
    return True


def _max_fd() -> int:
    try:
        return max(256, os.sysconf("SC_OPEN_MAX"))
    except (OSError, ValueError):
        return 65536


_MAX_FD = _max_fd()


class SideThread:
    """Runs the callables it is given, one at a time, with its own descriptor table."""

    def __init__(self, name: str = "jupyter_cancel-files") -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any] | None]] = queue.SimpleQueue()
        self._started = threading.Event()
        self.private = False
        self.pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._started.wait()

    def _run(self) -> None:
        self.private = _leave_shared_table()
        self._started.set()
        while True:
            job, future = self._jobs.get()
            try:
                result = job()
            except BaseException as err:  # handed to the caller; a job must never end the thread
                if future is None:
                    log.exception("background job %r failed", job)
                else:
                    future.set_exception(err)
                continue
            if future is not None:
                future.set_result(result)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on this thread; its result (or its exception) here."""
        if threading.current_thread() is self._thread:
            return fn(*args)
        future: Future[T] = Future()
        self._jobs.put((lambda: fn(*args), future))
        return future.result()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """``fn(*args)`` on this thread, later; a failure is logged."""
        self._jobs.put((lambda: fn(*args), None))


_side: SideThread | None = None
_side_lock = threading.Lock()


def _forked() -> None:  # the child has no side thread, and maybe a lock held by a thread it lost
    global _side, _side_lock
    _side, _side_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


def side() -> SideThread:
    """This process's side thread (started on first use; again in a forked child)."""
    global _side
    current = _side
    if current is not None and current.pid == os.getpid():
        return current
    with _side_lock:
        if _side is None or _side.pid != os.getpid():
            _side = SideThread()
        return _side
