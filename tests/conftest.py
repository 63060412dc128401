"""Shared fixtures: every test fails if a process it started is still alive after it."""

from __future__ import annotations

import os
import uuid

import pytest

from tests.helpers.procs import SESSION_MARK, cookie_carriers, descendants, kill_pids
from tests.helpers.wait import wait_gone


def pytest_configure(config):
    os.environ.setdefault(SESSION_MARK, uuid.uuid4().hex)


def _is_allowed(pid: int) -> bool:
    """Long-lived helpers of the session itself are not leaks: the test process's own
    watchdog, and the browser a UI module shares between its tests (and its renderers)."""
    import os

    import psutil

    try:
        proc = psutil.Process(pid)
        cmd = " ".join(proc.cmdline())
        if "jupyter_cancel.core.watchdog" in cmd:
            return proc.ppid() == os.getpid()
        return "chromium" in cmd or "chrome_crashpad" in cmd
    except psutil.Error:
        return True


@pytest.fixture(autouse=True)
def no_leaks(request):
    before = {**descendants(), **cookie_carriers()}
    yield

    def leaked() -> dict[int, float]:
        now = {**descendants(), **cookie_carriers()}
        return {pid: ct for pid, ct in now.items() if before.get(pid) != ct and not _is_allowed(pid)}

    # Processes on their way out (being reaped by a kernel or the server): wait for their exit.
    wait_gone(leaked(), timeout=5.0)
    leaked = leaked()
    if leaked:
        kill_pids(leaked)
        pytest.fail(f"test left processes alive: {sorted(leaked)}")
