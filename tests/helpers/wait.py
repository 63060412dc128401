"""How tests wait: on events where the system gives one — a pid's exit (a pidfd), a file
written (inotify on its folder) — and through ``until`` where it gives none (a value in /proc,
a server's state). ``until`` is the one place a test polls; nothing in the tests sleeps for a
fixed time to let things happen.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import select
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
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


# inotify(7): the events that change a file's existence or content.
_IN_EVENTS = 0x2 | 0x8 | 0x80 | 0x100  # IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE


def _inotify(folder: Path) -> int | None:
    """A non-blocking inotify fd watching ``folder``; None where inotify is missing."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, AttributeError):
        return None
    if fd < 0:
        return None
    if libc.inotify_add_watch(fd, os.fsencode(folder), _IN_EVENTS) < 0:
        os.close(fd)
        return None
    return fd


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 65536):
            pass
    except BlockingIOError:
        pass


def until_file(path: Path, predicate: Callable[[], T], timeout: float, what: str = "file") -> T:
    """``predicate()``'s first truthy value, looked at again each time something in ``path``'s
    folder is written (inotify; ``until`` where there is none)."""
    fd = _inotify(Path(path).parent)
    if fd is None:
        return until(predicate, timeout, what)
    deadline = time.monotonic() + timeout
    try:
        while not (value := predicate()):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(what)
            if select.select([fd], [], [], left)[0]:
                _drain(fd)
        return value
    finally:
        os.close(fd)


async def until_file_async(
    path: Path, predicate: Callable[[], Any], timeout: float, what: str = "file"
) -> Any:
    """``until_file`` on the running event loop (the inotify fd through ``add_reader``)."""
    fd = _inotify(Path(path).parent)
    if fd is None:
        return await until_async(predicate, timeout, what)
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()
    loop.add_reader(fd, lambda: (_drain(fd), changed.set()))
    deadline = time.monotonic() + timeout
    try:
        while not (value := predicate()):
            changed.clear()
            try:
                await asyncio.wait_for(changed.wait(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                if not (value := predicate()):
                    raise TimeoutError(what) from None
                return value
        return value
    finally:
        loop.remove_reader(fd)
        os.close(fd)
