"""Our own file descriptors, kept out of the user's way.

A descriptor opened on the user's thread takes the lowest free number — 0, 1 or 2 if the user
closed one — and a number the user later ``dup2``s onto would be closed by us as if it were
ours. Every descriptor the core keeps open (pidfds, wake-up pipes) is moved above ``FLOOR``,
close-on-exec, right after it is opened.
"""

from __future__ import annotations

import fcntl
import os


def _floor() -> int:
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY:
            return 256
    except (ImportError, OSError, ValueError):  # no resource module (Windows)
        return 256
    return 256 if soft >= 1024 else max(3, soft // 2)


#: Our descriptors are numbered at or above this (below the soft limit, so it always works).
FLOOR = _floor()


def high(fd: int) -> int:
    """``fd`` moved to a number ≥ ``FLOOR`` (close-on-exec); the original number is closed.
    Where that fails (the table is full up there) the original is kept."""
    if fd >= FLOOR:
        return fd
    try:
        moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, FLOOR)
    except OSError:
        return fd
    os.close(fd)
    return moved


def dup_high(fd: int) -> int:
    """A copy of ``fd`` numbered ≥ ``FLOOR`` (close-on-exec), made there directly: no low
    number is taken even for a moment (``OSError`` if the table is full up there)."""
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, FLOOR)


def pidfd_open(pid: int) -> int:
    """A pidfd for ``pid`` above ``FLOOR``; ``OSError`` as ``os.pidfd_open``."""
    return high(os.pidfd_open(pid))


def pipe() -> tuple[int, int]:
    """A pipe whose two ends are above ``FLOOR`` (close-on-exec, as ``os.pipe``'s are)."""
    r, w = os.pipe()
    return high(r), high(w)
