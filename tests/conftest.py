"""Shared fixtures: every test fails if a process it started is still alive after it."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path

import pytest

from tests.helpers.foreign import use_test_kernels
from tests.helpers.home import private_jupyter_home
from tests.helpers.procs import SESSION_MARK, cookie_carriers, descendants, kill_pids
from tests.helpers.wait import wait_gone

#: Jupyter's and IPython's per-user folders, for every test and everything a test starts: a
#: temporary folder, never the user's home. Set at import, before any Jupyter module reads a path.
_JUPYTER_HOME = private_jupyter_home("jupyter-cancel-tests-")
use_test_kernels(Path(_JUPYTER_HOME) / "test-kernels")  # bash, xeus-python: not in the main job's Launcher
#: The user's own Jupyter folders: a run must leave them byte for byte as they were.
USER_DIRS = [Path.home() / ".jupyter", Path.home() / ".local" / "share" / "jupyter", Path.home() / ".ipython"]


_HOME_KEY = pytest.StashKey[str]()


def fingerprint(folders: list[Path]) -> str:
    """Every file's path and content under ``folders`` (missing folders count as empty)."""
    digest = hashlib.sha256()
    for folder in folders:
        for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
            digest.update(str(path).encode())
            if path.is_file() and not path.is_symlink():
                digest.update(path.read_bytes())
    return digest.hexdigest()


def pytest_configure(config):
    os.environ.setdefault(SESSION_MARK, uuid.uuid4().hex)
    config.stash[_HOME_KEY] = fingerprint(USER_DIRS)


def pytest_sessionfinish(session, exitstatus):
    if fingerprint(USER_DIRS) != session.config.stash[_HOME_KEY]:
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(
            f"FAILED the test run changed the user's Jupyter folders ({', '.join(map(str, USER_DIRS))})",
            red=True,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    shutil.rmtree(_JUPYTER_HOME, ignore_errors=True)


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
