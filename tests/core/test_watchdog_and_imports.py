"""The watchdog cleans up after an owner killed with SIGKILL; the core imports no Jupyter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from tests.helpers.procs import alive, tree_cmd, wait_ready
from tests.helpers.wait import until


def test_owner_sigkill_watchdog_terminates_trees(tmp_path):
    ready = tmp_path / "ready"
    owner_code = textwrap.dedent(
        f"""
        import jupyter_cancel as jc, sys, signal
        a = jc.start({tree_cmd("setsid", ready)!r}, display=False)
        b = jc.start({tree_cmd("ignore_term", tmp_path / "ign")!r}, display=False, grace=0.3)
        d = jc.start({tree_cmd("child", tmp_path / "det")!r}, display=False, policy="detach")
        print(jc.core.default_registry()._watchdog.proc.pid, flush=True)
        signal.pause()
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", owner_code], stdout=subprocess.PIPE, text=True)
    watchdog_pid = int(owner.stdout.readline())
    owner.stdout.close()
    pids = wait_ready(ready, 3) + wait_ready(tmp_path / "ign", 1)
    (detached,) = wait_ready(tmp_path / "det", 1)
    try:
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        import psutil

        psutil.Process(watchdog_pid).wait(5)  # the watchdog exits once done
        assert [p for p in pids if alive(p)] == []
        assert alive(detached), "detach work survives its owner"
    finally:
        if alive(detached):
            os.kill(detached, signal.SIGKILL)
            psutil.Process(detached).wait(3) if alive(detached) else None


def test_core_imports_no_jupyter():
    code = (
        "import sys, jupyter_cancel.core, jupyter_cancel;"
        "bad = [m for m in ('IPython','ipykernel','jupyter_server','ipywidgets','tornado','jupyter_client') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_public_api_is_pinned():
    import jupyter_cancel as jc

    expected = {
        "run",
        "start",
        "progress",
        "scope",
        "task",
        "operations",
        "cancel",
        "cancel_all",
        "Operation",
        "Cancelled",
        "CancelScope",
        "JupyterCancelError",
        "Policy",
        "Reason",
        "State",
        "__version__",
        "adopt",
        "policy",
    }
    assert set(jc.__all__) == expected
    for name in expected:
        assert hasattr(jc, name)


def test_killed_watchdog_is_replaced_without_any_server(tmp_path):
    """Plain Python: the watchdog is SIGKILLed, a new one takes over the live trees."""
    import psutil

    ready = tmp_path / "ready"
    owner_code = textwrap.dedent(
        f"""
        import jupyter_cancel as jc, signal
        a = jc.start({tree_cmd("daemon", ready)!r}, display=False)
        print(jc.core.default_registry()._watchdog.proc.pid, flush=True)
        signal.pause()
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", owner_code], stdout=subprocess.PIPE, text=True)
    try:
        old = int(owner.stdout.readline())
        owner.stdout.close()
        pids = wait_ready(ready, 2)
        os.kill(old, signal.SIGKILL)

        def watchdogs():
            found = []
            for p in psutil.Process(owner.pid).children():
                try:
                    if "jupyter_cancel.core.watchdog" in " ".join(p.cmdline()) and p.pid != old:
                        found.append(p.pid)
                except psutil.Error:  # the old one, a zombie until its guard reaps it
                    continue
            return found

        new = until(watchdogs, 10, "a new watchdog")
        assert len(new) == 1
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        psutil.Process(new[0]).wait(10)  # it ran its cleanup and exited
        assert [p for p in pids if alive(p)] == []
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
