"""Process-tree termination against real trees of every escaping shape."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import psutil
import pytest

import jupyter_cancel as jc
from jupyter_cancel.core import proctree, watchdog
from jupyter_cancel.core.cgroup import Cgroup
from tests.helpers.procs import TREE, alive, tree_cmd, wait_ready
from tests.helpers.wait import until

MODES = [("child", 1), ("grandchild", 2), ("setsid", 3), ("daemon", 2), ("three", 3)]


@pytest.mark.parametrize(("mode", "count"), MODES)
def test_cancel_kills_whole_tree(tmp_path, mode, count, mechanism):
    ready = tmp_path / "ready"
    op = jc.start(tree_cmd(mode, ready), display=False, grace=2)
    pids = wait_ready(ready, count)
    assert all(alive(p) for p in pids)
    assert op.cancel() is True
    assert op.state is jc.State.CANCELLED
    assert op.returncode == -15, "it honours SIGTERM: never SIGKILLed"
    assert op.reason == "user" and op.exit_code == 130
    assert [p for p in pids if alive(p)] == []


@pytest.mark.parametrize("scan", ["carriers_since", "snapshot"])
@pytest.mark.parametrize("retries", [True, False])
def test_a_process_in_the_middle_of_an_exec_is_read_again(tmp_path, monkeypatch, scan, retries):
    """A process in the middle of an exec reads as having no environment for a moment (seen
    here: 44 of 300 `sh -c "cmd &"` children read so at some point): an empty read is read
    again. The moment is held open here: the process has no environment until the scan's
    pause lets it exec into one that carries the cookie. Without the retries it is missed."""
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    op_id = f"mid-exec-{scan}-{retries}"
    script = f'read x < "{fifo}"; exec /usr/bin/env {proctree.COOKIE}={op_id} sleep 60'
    proc = subprocess.Popen(["/usr/bin/env", "-i", "/bin/sh", "-c", script])
    try:
        until(lambda: _cmdline(proc.pid).startswith(b"/bin/sh"), 10, "sh started")
        released: list[bool] = []

        def pause(_seconds: float) -> None:
            if not released:
                released.append(True)
                with open(fifo, "w") as fh:
                    fh.write("go\n")
                until(lambda: _cmdline(proc.pid).startswith(b"sleep"), 10, "the exec done")

        monkeypatch.setattr(proctree, "_pause", pause)
        if not retries:
            monkeypatch.setattr(proctree, "_EMPTY_RETRIES", ())
        if scan == "carriers_since":
            found = proctree.carriers_since(op_id, proc.pid)
        else:
            found = proctree.Snapshot().cookie.get(op_id.encode(), [])
        assert found == ([proc.pid] if retries else []), found
    finally:
        proc.kill()
        proc.wait()


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


@pytest.mark.parametrize("use_cgroup", [False, True])
def test_daemon_with_cleared_env(tmp_path, monkeypatch, use_cgroup):
    """A double-fork daemon that also clears its environment: only the cgroup catches it."""
    if use_cgroup and not Cgroup.available():
        pytest.skip("no writable cgroup v2 here")
    if not use_cgroup:
        monkeypatch.setattr(Cgroup, "create", classmethod(lambda cls, op_id: None))
    ready = tmp_path / "ready"
    op = jc.start(tree_cmd("envclear", ready), display=False)
    pids = wait_ready(ready, 2)
    op.cancel()
    survivors = [p for p in pids if alive(p)]
    if use_cgroup:
        assert survivors == []
    else:
        # The documented escape without cgroups: clean it up by pid ourselves.
        assert len(survivors) == 1
        psutil.Process(survivors[0]).kill()
        psutil.Process(survivors[0]).wait(3) if alive(survivors[0]) else None


def test_sigterm_ignored_is_killed_at_grace_not_before(tmp_path, mechanism):
    ready = tmp_path / "ready"
    op = jc.start(tree_cmd("ignore_term", ready), display=False, grace=0.6)
    (pid,) = wait_ready(ready, 1)
    started = time.monotonic()
    op.cancel()
    took = time.monotonic() - started
    assert not alive(pid)
    assert took >= 0.6, f"SIGKILLed {took:.3f}s after SIGTERM: before its grace"
    assert op.returncode == -9 and op.exit_code == 130


def test_fork_while_dying_is_caught(tmp_path, mechanism):
    ready = tmp_path / "ready"
    op = jc.start(tree_cmd("fork_on_term", ready), display=False, grace=0.5)
    (pid,) = wait_ready(ready, 1)
    op.cancel()
    late = wait_ready(tmp_path / "ready.late", 1)
    assert not alive(pid)
    assert [p for p in late if alive(p)] == []


def test_tree_that_exits_before_cancel_is_completed(mechanism):
    op = jc.start(["true"], display=False)
    assert op.wait(5) is jc.State.COMPLETED
    assert op.cancel() is False
    assert op.state is jc.State.COMPLETED and op.returncode == 0 and op.reason is None


def test_leftover_background_process_is_ended_with_its_tree(tmp_path, mechanism):
    ready = tmp_path / "ready"
    # the shell waits until its background child announced itself, then exits
    cmd = " ".join(tree_cmd("child", ready)) + f" & while [ ! -s {ready} ]; do sleep 0.01; done; exit 0"
    op = jc.start(cmd, shell=True, display=False)
    (pid,) = wait_ready(ready, 1)
    assert op.wait(5) is jc.State.COMPLETED
    psutil.Process(pid).wait(5)  # swept like Jenkins' ProcessTreeKiller, not left running


def test_reused_identity_is_never_signalled(tmp_path):
    """A registration whose create_time no longer matches its pid (pid reused) is never signalled."""
    bystander = subprocess.Popen(tree_cmd("child", tmp_path / "b"))
    try:
        wait_ready(tmp_path / "b", 1)
        real = psutil.Process(bystander.pid).create_time()
        line = json.dumps({"register": "gone-op", "pid": bystander.pid, "ctime": real - 100, "grace": 0.2})
        assert watchdog.main(io.BytesIO(line.encode() + b"\n")) == 0  # EOF: the owner "died"
        assert bystander.poll() is None and alive(bystander.pid)
        # the same registration with the true identity is acted on: the check is what spared it
        line = json.dumps({"register": "op", "pid": bystander.pid, "ctime": real, "grace": 0.2})
        watchdog.main(io.BytesIO(line.encode() + b"\n"))
        assert bystander.wait(3) == -15
    finally:
        if bystander.poll() is None:
            bystander.kill()
            bystander.wait()


def test_bystander_with_same_command_line_untouched(tmp_path, mechanism):
    cmd = tree_cmd("child", tmp_path / "same")
    bystander = subprocess.Popen(cmd)
    try:
        op = jc.start(cmd, display=False)
        pids = wait_ready(tmp_path / "same", 2)
        op.cancel()
        assert bystander.poll() is None
        assert [p for p in pids if alive(p)] == [bystander.pid]
    finally:
        bystander.kill()
        bystander.wait()


def test_sweep_finds_only_cookie_carriers(tmp_path):
    op = jc.start(tree_cmd("daemon", tmp_path / "r"), display=False)
    pids = wait_ready(tmp_path / "r", 2)
    found = proctree.sweep([op.id])
    assert set(pids) <= {p.pid for p in found[op.id]}
    assert os.getpid() not in {p.pid for p in found[op.id]}
    op.cancel()
    assert proctree.sweep([op.id]) == {}


def test_leak_check_sees_our_cookie_carriers_only(tmp_path):
    """The fixture that fails leaking tests must see our leaks and nobody else's processes."""
    from tests.helpers.procs import SESSION_MARK, cookie_carriers

    env = dict(os.environ, JUPYTER_CANCEL_OP="leak-probe")
    ours = subprocess.Popen(tree_cmd("child", tmp_path / "ours"), env=env)
    env_other = {k: v for k, v in env.items() if k != SESSION_MARK}
    theirs = subprocess.Popen(tree_cmd("child", tmp_path / "theirs"), env=env_other)
    try:
        wait_ready(tmp_path / "ours", 1)
        wait_ready(tmp_path / "theirs", 1)
        found = cookie_carriers()
        assert ours.pid in found and theirs.pid not in found
    finally:
        for p in (ours, theirs):
            p.kill()
            p.wait()


def test_detach_leftovers_are_not_swept(tmp_path):
    """A detach tree's root exits leaving a background child: that child is kept (only an
    explicit stop ends detach work); the same tree under ``cancel`` is swept (above)."""
    ready = tmp_path / "ready"
    cmd = " ".join(tree_cmd("child", ready)) + f" & while [ ! -s {ready} ]; do sleep 0.01; done; exit 0"
    op = jc.start(cmd, shell=True, display=False, policy="detach")
    (pid,) = wait_ready(ready, 1)
    assert op.wait(5) is jc.State.COMPLETED
    try:
        # A kernel shutdown does not reach detach work either, finished root or not.
        jc.core.default_registry().cancel_all("kernel_shutdown", wait=True)
        assert alive(pid), "detach leftovers were swept"
    finally:
        psutil.Process(pid).kill()
        psutil.Process(pid).wait(5)


def test_no_cgroup_environment_switch(tmp_path):
    code = (
        "import jupyter_cancel as jc, sys, json\n"
        "op = jc.start(['sleep', '60'], display=False)\n"
        "print(json.dumps(op.to_json()['cgroup'])); op.cancel()"
    )
    for env, expect_cgroup in (({"JUPYTER_CANCEL_NO_CGROUP": "1"}, False), ({}, Cgroup.available())):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
        )
        assert (json.loads(out.stdout) is not None) is expect_cgroup, (env, out.stdout)


def test_grace_runs_from_each_trees_own_sigterm(tmp_path, monkeypatch):
    """Signalling many trees takes time (thousands, a loaded machine): a process that honours
    SIGTERM within its grace is never SIGKILLed because the others were signalled first."""
    import select
    import signal as _signal

    procs = [subprocess.Popen([sys.executable, TREE, "slow_term", str(tmp_path / f"r{i}")]) for i in range(6)]
    try:
        pids = [wait_ready(tmp_path / f"r{i}", 1)[0] for i in range(6)]
        trees = [
            proctree.Tree(op_id=f"t{i}", root=psutil.Process(pid), grace=1.0) for i, pid in enumerate(pids)
        ]
        original = proctree._Member.signal
        previous: list[int] = []

        def slow(member, sig):
            # Each SIGTERM goes out only once the one before has taken effect (its process,
            # 0.3 s to shut down, has exited): signalling all six takes ~1.5 s, past the grace.
            if sig == _signal.SIGTERM and previous:
                fd = os.pidfd_open(previous[-1])
                select.select([fd], [], [], 10)
                os.close(fd)
            original(member, sig)
            if sig == _signal.SIGTERM:
                previous.append(member.proc.pid)

        monkeypatch.setattr(proctree._Member, "signal", slow)
        outcome = proctree.terminate(trees)
        assert outcome.killed == {}, outcome.killed
        assert sorted(p for ps in outcome.gone.values() for p in ps) == sorted(pids)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_newer_pids_follow_the_counter_around_its_wrap():
    """A leftover of a process whose pid was handed out just before the counter wrapped has a
    low pid: it is still newer (a check of ``pid >= first`` alone missed it)."""
    from jupyter_cancel.core.proctree import newer_pids

    live = [1, 40, 300, 955, 956, 31000, 32700, 32760]
    assert newer_pids(live, 31000, last_pid=32760) == [31000, 32700, 32760]  # no wrap
    assert newer_pids(live, 31000, last_pid=956) == [1, 40, 300, 955, 956, 31000, 32700, 32760]
    assert newer_pids(live, 32700, last_pid=300) == [1, 40, 300, 32700, 32760]  # 955, 956 are older
    assert newer_pids(live, 32700, last_pid=None) == live  # unknown: everything is read


def test_a_tree_whose_members_are_known_ends_them_without_a_proc_pass(tmp_path, monkeypatch):
    """A server ending a foreign kernel's work hands each tree the members its scan just found:
    the termination signals exactly those (and the root), reading no /proc pass of its own."""
    root = subprocess.Popen(tree_cmd("three", tmp_path / "t"))
    bystander = subprocess.Popen(tree_cmd("child", tmp_path / "b"))
    try:
        pids = wait_ready(tmp_path / "t", 3)
        wait_ready(tmp_path / "b", 1)
        members = tuple(psutil.Process(p) for p in pids if p != root.pid)

        def no_pass(*args, **kwargs):
            raise AssertionError("a /proc pass")

        monkeypatch.setattr(proctree, "Snapshot", no_pass)
        tree = proctree.Tree(op_id="known", root=psutil.Process(root.pid), grace=2.0, known=members)
        outcome = proctree.terminate([tree])
        assert sorted(outcome.gone["known"]) == sorted(pids)
        assert not any(alive(p) for p in pids)
        assert bystander.poll() is None and alive(bystander.pid)
    finally:
        for proc in (root, bystander):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
