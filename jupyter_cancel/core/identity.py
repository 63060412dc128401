"""A process's identity: ``[pid, create_time]``, as runners report a tree's root and as the
watchdog and the server receive it. One parser, one tolerance: a pid is signalled only while
it still names the process created at that time (a reused pid never is)."""

from __future__ import annotations

from typing import Any

import psutil

#: How far two readings of one process's create time may differ (seconds): psutil derives it
#: from boot time and clock ticks, so a reading in another process can differ by rounding.
CTIME_TOLERANCE = 0.005


def identity_of(proc: psutil.Process) -> list[Any]:
    """``[pid, create_time]`` of ``proc`` (``psutil.Error`` if it is gone)."""
    return [proc.pid, proc.create_time()]


def process_of(ident: Any) -> psutil.Process | None:
    """The process ``ident`` (``[pid, create_time]``, as sent) names, if it is still that one;
    None if it is gone, its pid was reused, or ``ident`` is not an identity."""
    if not isinstance(ident, (list, tuple)) or len(ident) != 2:
        return None
    try:
        pid, ctime = int(ident[0]), float(ident[1])
    except (TypeError, ValueError, OverflowError):
        return None
    if pid <= 0:
        return None
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - ctime) > CTIME_TOLERANCE:
            return None  # the pid was reused: never signal a stranger
    except psutil.Error:
        return None
    return proc
