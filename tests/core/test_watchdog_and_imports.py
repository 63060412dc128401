"""The watchdog cleans up after an owner killed with SIGKILL; the core imports no Jupyter."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap

from tests.helpers.procs import alive, tree_cmd, wait_ready
from tests.helpers.wait import until


def start_owner(code: str, env=None):
    """An owner process running ``code``, which prints its watchdog's pid; and that watchdog."""
    import psutil

    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    watchdog = psutil.Process(int(owner.stdout.readline()))
    owner.stdout.close()
    return owner, watchdog


@contextlib.contextmanager
def ended_at_exit(owner: subprocess.Popen):
    """The owner is killed and reaped on the way out, whatever the test saw."""
    try:
        yield
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()


def test_owner_sigkill_watchdog_terminates_trees(tmp_path):
    ready = tmp_path / "ready"
    owner_code = textwrap.dedent(
        f"""
        import jupyter_cancel as jc, sys, signal
        a = jc.start({tree_cmd("setsid", ready)!r}, display=False)
        b = jc.start({tree_cmd("ignore_term", tmp_path / "ign")!r}, display=False, grace=0.3)
        d = jc.start({tree_cmd("child", tmp_path / "det")!r}, display=False, policy="detach")
        print(jc.core.default_registry().watchdog_health()["pid"], flush=True)
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


def test_a_detached_watchdog_is_not_its_owners_child_and_ends_everything(tmp_path):
    """Where a supervisor kills a dying owner's direct children first (Ray does, on a forced
    cancel), the watchdog is started detached: the owner and its direct children (the trees'
    roots) SIGKILLed at once, as Ray does it, still leave nothing — setsid members included."""
    import psutil

    ready = tmp_path / "ready"
    owner_code = textwrap.dedent(
        f"""
        import jupyter_cancel as jc, signal
        a = jc.start({tree_cmd("setsid", ready)!r}, display=False)
        print(jc.core.default_registry().watchdog_health()["pid"], flush=True)
        signal.pause()
        """
    )
    owner, watchdog = start_owner(owner_code, env=dict(os.environ, JUPYTER_CANCEL_WATCHDOG_DETACH="1"))
    pids = wait_ready(ready, 3)
    assert watchdog.pid not in [c.pid for c in psutil.Process(owner.pid).children()]
    with ended_at_exit(owner):
        children = psutil.Process(owner.pid).children()
        os.kill(owner.pid, signal.SIGKILL)
        for child in children:  # what Ray's kill_child_processes_on_worker_exit does
            child.kill()
        owner.wait()
        watchdog.wait(10)  # it ran its cleanup and exited
        assert [p for p in pids if alive(p)] == []


def test_the_watchdog_ends_a_captured_tree_its_owner_never_got_to_register(tmp_path):
    """A captured child is registered with the watchdog only once it lived ``ADOPT_AFTER``;
    an owner killed before that is covered by the watchdog's pass for the owner's cookies
    (here the owner never gets there: its adoptions wait an hour)."""
    ready = tmp_path / "ready"
    owner_code = textwrap.dedent(
        f"""
        import signal, subprocess
        import jupyter_cancel as jc
        from jupyter_cancel.core import adoption, api
        from jupyter_cancel.core.capture import OwnedCapture

        adoption.ADOPT_AFTER = 3600.0
        registry = jc.core.default_registry()
        registry.start_watchdog(wait=30)
        OwnedCapture(registry, lambda: {{}}, api.current_policy).install()
        child = subprocess.Popen({tree_cmd("setsid", ready)!r})
        print(registry.watchdog_health()["pid"], flush=True)
        signal.pause()
        """
    )
    owner, watchdog = start_owner(owner_code)
    pids = wait_ready(ready, 3)
    with ended_at_exit(owner):
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        watchdog.wait(10)  # it ran its cleanup and exited
        assert [p for p in pids if alive(p)] == []


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
        print(jc.core.default_registry().watchdog_health()["pid"], flush=True)
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


def test_shared_watchdog_ends_each_owners_trees_when_that_owner_dies(tmp_path, monkeypatch):
    """One watchdog for many owners (a server's kernels): an owner's SIGKILL ends its trees,
    not another owner's; told to stop, it leaves once no owner is connected."""
    import psutil

    from jupyter_cancel.core.watchdog_client import SOCKET_ENV, start_shared

    path = str(tmp_path / "w.sock")
    shared = start_shared(path)
    monkeypatch.setenv(SOCKET_ENV, path)
    owners, trees = [], []
    try:
        for name in ("a", "b"):
            ready = tmp_path / name
            code = textwrap.dedent(
                f"""
                import jupyter_cancel as jc, signal
                op = jc.start({tree_cmd("setsid", ready)!r}, display=False)
                print(jc.core.default_registry().watchdog_health(), flush=True)
                signal.pause()
                """
            )
            owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
            health = eval(owner.stdout.readline())
            owner.stdout.close()
            assert health["shared"] and health["pid"] == shared.pid, health
            owners.append(owner)
            trees.append(wait_ready(ready, 3))
        os.kill(owners[0].pid, signal.SIGKILL)
        owners[0].wait()
        from tests.helpers.wait import wait_gone

        assert wait_gone(trees[0], 5) == []
        assert [p for p in trees[1] if alive(p)] == trees[1], "another owner's trees were touched"
        shared.send_signal(signal.SIGTERM)  # stop: it waits for the last owner
        assert shared.poll() is None
        os.kill(owners[1].pid, signal.SIGKILL)
        owners[1].wait()
        assert wait_gone(trees[1], 5) == []
        psutil.Process(shared.pid).wait(5) if alive(shared.pid) else None
        assert not alive(shared.pid)
    finally:
        for proc in owners:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if shared.poll() is None:
            shared.kill()
        shared.wait()


def test_an_owner_that_exits_normally_ends_its_trees_quietly(tmp_path):
    """A plain Python process that started work and returns: its registry closes at exit (after
    the interpreter stopped new worker threads) — the trees end, their cgroups go, and nothing
    is printed (it printed a ``RuntimeError: cannot schedule new futures`` traceback)."""
    import psutil

    ready = tmp_path / "ready"
    owner_code = textwrap.dedent(
        f"""
        import jupyter_cancel as jc, sys
        op = jc.start({tree_cmd("setsid", ready)!r}, display=False)
        registry = jc.core.default_registry()
        registry.start_watchdog(wait=30)
        print(registry.watchdog_health()["pid"], flush=True)
        sys.stdin.readline()
        """
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", owner_code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog_pid = int(owner.stdout.readline())
    pids = wait_ready(ready, 3)
    _, err = owner.communicate("\n", timeout=60)
    assert owner.returncode == 0, err
    assert "Traceback" not in err, err
    psutil.Process(watchdog_pid).wait(10) if alive(watchdog_pid) else None  # done: it exits
    assert [p for p in pids if alive(p)] == []
