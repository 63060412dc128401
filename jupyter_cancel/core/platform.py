"""The mechanisms this machine offers, chosen once, behind one object the rest of the core
asks (``platform.current()``) instead of module flags:

- **waiter**: pidfds (``pidfd_open`` + ``pidfd_send_signal``: a process is pinned and awaited
  without polling), else psutil's polling;
- **scanner**: our own reads of ``/proc`` (one listing finds a tree's cookie carriers), else
  psutil's process iteration;
- **container**: a cgroup v2 per tree where a writable one exists, else none;
- **cookie sweep**: a last pass for the tree's cookie (switched off only to measure what the
  other mechanisms catch alone, ``bench/escapes.py``).

``Platform.portable()`` is what macOS gets (psutil only: no ``/proc`` reads of ours, no pidfd,
no cgroup); tests run the core and the capture matrix on it here too (``use`` in a process,
``JUPYTER_CANCEL_PLATFORM=portable`` in the environment of a kernel).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
from collections.abc import Iterator

#: ``portable``: this process uses the portable backend whatever the machine offers.
PLATFORM_ENV = "JUPYTER_CANCEL_PLATFORM"


@dataclasses.dataclass(frozen=True)
class Platform:
    pidfd: bool
    proc: bool
    cgroups: bool
    cookie_sweep: bool = True

    @classmethod
    def detect(cls) -> Platform:
        if os.environ.get(PLATFORM_ENV) == "portable":
            return cls.portable()
        return cls(
            pidfd=hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal"),
            proc=os.path.isdir("/proc"),
            cgroups=True,  # where a writable cgroup v2 exists (``Cgroup.create`` finds out)
        )

    @classmethod
    def portable(cls) -> Platform:
        return cls(pidfd=False, proc=False, cgroups=False)

    @property
    def name(self) -> str:
        if self == Platform.portable():
            return "portable"
        return "+".join(n for n in ("pidfd", "proc", "cgroups") if getattr(self, n)) or "none"


_current = Platform.detect()


def current() -> Platform:
    """The mechanisms in use (detected once, at import)."""
    return _current


@contextlib.contextmanager
def use(platform: Platform) -> Iterator[Platform]:
    """Use ``platform`` instead (tests, benchmarks); the detected one again after."""
    global _current
    previous, _current = _current, platform
    try:
        yield platform
    finally:
        _current = previous
