"""Shared fixtures: every test fails if a process it started is still alive after it."""

from __future__ import annotations

import time

import pytest

from tests.helpers.procs import cookie_carriers, descendants, kill_pids

# Long-lived helpers of the test process itself (the registry's watchdog) are not leaks.
_ALLOWED = ("jupyter_cancel.core.watchdog",)


def _is_allowed(pid: int) -> bool:
    import psutil

    try:
        cmd = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return True
    return any(a in cmd for a in _ALLOWED)


@pytest.fixture(autouse=True)
def no_leaks(request):
    before = {**descendants(), **cookie_carriers()}
    yield
    deadline = time.monotonic() + 5.0
    while True:
        now = {**descendants(), **cookie_carriers()}
        leaked = {
            pid: ct for pid, ct in now.items() if before.get(pid) != ct and not _is_allowed(pid)
        }
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)  # processes being reaped by a kernel or the server on their way out
    if leaked:
        kill_pids(leaked)
        pytest.fail(f"test left processes alive: {sorted(leaked)}")
