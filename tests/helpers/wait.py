"""How tests wait: on events where the system gives one (a pid's exit, through a pidfd), and
through ``until`` where it gives none (a ready file growing, a value in /proc). ``until`` is
the one place a test polls; nothing in the tests sleeps for a fixed time to let things happen.
"""

from __future__ import annotations

import asyncio
import os
import select
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")
#: How often ``until`` looks again at a condition that has no event.
INTERVAL = 0.01


def until(predicate: Callable[[], T], timeout: float, what: str = "condition") -> T:
    """``predicate()``'s first truthy value; ``TimeoutError(what)`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(INTERVAL)
    return value


async def until_async(predicate: Callable[[], Any], timeout: float, what: str = "condition") -> Any:
    """``until`` for a test sharing its event loop with a server; ``predicate`` may be async."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(INTERVAL)


def _pidfds(pids: Iterable[int]) -> dict[int, int]:
    fds = {}
    for pid in pids:
        try:
            fds[pid] = os.pidfd_open(pid)
        except ProcessLookupError:
            continue  # already gone (and reaped)
    return fds


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return True


def wait_gone(pids: Iterable[int], timeout: float = 5.0) -> list[int]:
    """Block until every pid has exited (a zombie counts as gone: it holds nothing) or
    ``timeout``; the pids still running. Event-driven: a pidfd turns readable on exit."""
    fds = _pidfds(pids)
    deadline = time.monotonic() + timeout
    try:
        while fds:
            left = max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select(list(fds.values()), [], [], left)
            for pid, fd in list(fds.items()):
                if fd in ready:
                    os.close(fds.pop(pid))
            if not ready:
                break
        return sorted(pid for pid in fds if not _zombie(pid))
    finally:
        for fd in fds.values():
            os.close(fd)


async def wait_gone_async(pids: Iterable[int], timeout: float = 5.0) -> list[int]:
    """``wait_gone`` on the running event loop (pidfds through ``add_reader``)."""
    loop = asyncio.get_running_loop()
    fds = _pidfds(pids)
    done = asyncio.Event()

    def exited(pid: int) -> None:
        loop.remove_reader(fds[pid])
        os.close(fds.pop(pid))
        if not fds:
            done.set()

    for pid, fd in list(fds.items()):
        loop.add_reader(fd, exited, pid)
    try:
        if fds:
            await asyncio.wait_for(done.wait(), timeout)
    except asyncio.TimeoutError:
        pass
    finally:
        for fd in fds.values():
            loop.remove_reader(fd)
            os.close(fd)
    return sorted(pid for pid in fds if not _zombie(pid))
