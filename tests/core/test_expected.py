"""A captured spawn becomes an operation later, in a batch (``Registry.expect``) — and nothing
that reads the registry meanwhile (a listing, a trigger) misses it."""

from __future__ import annotations

import subprocess
import sys
import threading
import weakref

import psutil
import pytest

from jupyter_cancel.core import adoption
from jupyter_cancel.core.capture import OwnedCapture
from jupyter_cancel.core.model import Policy, State
from jupyter_cancel.core.registry import Registry
from jupyter_cancel.core.starts import new_scope
from tests.helpers.procs import TREE, kill_pids, wait_ready
from tests.helpers.wait import until, wait_gone


def _captured(registry: Registry) -> OwnedCapture:
    capture = OwnedCapture(registry, lambda: {"cell_id": "cell"}, lambda: Policy.CANCEL)
    capture.install()
    return capture


def registry_scope(registry: Registry, name: str):
    return new_scope(registry, name)


def _recorded(registry: Registry, count: int = 1) -> tuple[list[int], threading.Event, list[object]]:
    """Spies on ``registry``: the threads that recorded a spawn's end (set once ``count`` did),
    and every expected spawn made a live operation."""
    recorded: list[int] = []
    made: list[object] = []
    done = threading.Event()
    record, make = registry.adoptions._recorder, registry.adoptions._make
    assert record is not None

    def recording(expected):
        recorded.append(threading.get_ident())
        ok = record(expected)
        if len(recorded) >= count:
            done.set()
        return ok

    def making(expected):
        made.append(expected)
        return make(expected)

    registry.adoptions._recorder = recording
    registry.adoptions._make = making
    return recorded, done, made


def test_an_instant_process_ends_off_the_spawning_thread_and_is_made_only_when_read():
    """A process over before its tick costs no operation: the tick records its end (not on the
    spawning thread), and a listing makes it then, ended as it did."""
    registry = Registry(watchdog=False)
    recorded, done, made = _recorded(registry)
    capture = _captured(registry)
    try:
        assert subprocess.run(["true"]).returncode == 0
        assert done.wait(10), "the tick never recorded its end"
    finally:
        capture.uninstall()
    try:
        assert recorded and threading.get_ident() not in recorded  # the tick's thread
        assert made == [] and not registry.adoptions.expected and not registry.adoptions.pending
        assert registry.operations() == []  # nothing live
        (op,) = registry.operations(include_done=True)  # the listing makes it
        assert made == [] and registry.get(op.id) is op and registry.operations(include_done=True) == [op]
        assert (op.name, op.kind, op.cell_id, op.state) == ("true", "process", "cell", State.COMPLETED)
        assert op.started <= op.ended and registry.wait(op, 1) is State.COMPLETED
        assert registry.cancel(op.id) == []  # over: a cancel of it is a no-op, not an error
    finally:
        registry.close()


def test_a_recorded_end_keeps_its_status_and_its_place_in_the_history(monkeypatch):
    registry = Registry(watchdog=False)
    recorded, done, _ = _recorded(registry)
    with registry_scope(registry, "before") as before:
        pass
    capture = _captured(registry)
    argv = ["sh", "-c", "exit 3"]
    try:
        child = subprocess.Popen(argv)  # held by the caller: its status is kept
        argv.append("changed later")  # (the name is the command as it ran)
        assert child.wait() == 3
        assert done.wait(10), "the tick never recorded its end"
    finally:
        capture.uninstall()
    with registry_scope(registry, "after") as after:
        pass
    try:
        first, op, last = registry.operations(include_done=True)
        assert (first, last) == (before.operation, after.operation)
        assert (op.name, op.state, op.returncode, op.exit_code) == ("sh -c 'exit 3'", State.FAILED, 3, 3)
        del child
    finally:
        registry.close()


def test_the_history_stays_bounded_with_recorded_ends():
    from jupyter_cancel.core.ledger import HISTORY

    registry = Registry(watchdog=False)
    _, done, made = _recorded(registry, count=HISTORY + 20)
    capture = _captured(registry)
    try:
        for _ in range(HISTORY + 20):
            subprocess.run(["true"])
        assert done.wait(30), "the ticks never recorded every end"
    finally:
        capture.uninstall()
    try:
        ops = registry.operations(include_done=True)
        assert made == [] and len(ops) == HISTORY and all(op.state is State.COMPLETED for op in ops)
        ids = sorted(int(op.id.rsplit("-", 1)[1]) for op in ops)  # the latest 200, oldest first
        assert ids == [int(op.id.rsplit("-", 1)[1]) for op in ops] and ids[-1] - ids[0] == HISTORY - 1
    finally:
        registry.close()


@pytest.fixture
def spawned_tree(tmp_path, monkeypatch):
    """A captured tree (a child and a setsid grandchild), its spawn not settled by any tick:
    the registry, the tree's pids; all of it ended after the test."""
    monkeypatch.setattr(adoption, "ADOPT_AFTER", 3600.0)  # no tick during the test
    registry = Registry(watchdog=False)
    ready = tmp_path / "ready"
    capture = _captured(registry)
    try:
        child = subprocess.Popen([sys.executable, TREE, "three", str(ready)])
    finally:
        capture.uninstall()
    try:
        yield registry, wait_ready(ready, 3)
    finally:
        registry.close()
        child.kill()
        child.wait()


def test_a_listing_and_a_trigger_before_the_tick_find_the_spawn(spawned_tree):
    registry, pids = spawned_tree
    assert list(registry.adoptions.expected) != [], "made an operation at its spawn"
    (op,) = registry.operations()  # a listing makes it
    assert op.state is State.RUNNING and TREE in op.name and not registry.adoptions.expected
    assert registry.cancel_all(wait=True) == [op]  # a trigger ends its whole tree
    assert wait_gone(pids, timeout=10) == []
    assert op.state is State.CANCELLED


def test_a_trigger_before_the_listing_ends_the_spawn(spawned_tree):
    registry, pids = spawned_tree
    (op,) = registry.cancel_all(wait=True)
    assert wait_gone(pids, timeout=10) == [] and op.state is State.CANCELLED


def test_the_tick_leaves_a_spawn_of_its_last_moment_to_the_next(spawned_tree):
    """In a loop of spawns one always runs as the tick fires, a millisecond from its end:
    the tick settles only what outlived half its window (here the clock is driven)."""
    registry, pids = spawned_tree
    (expected,) = registry.adoptions.expected.values()
    registry.adoptions._settle()  # a tick right after the spawn
    assert expected.op is None and list(registry.adoptions.expected) == [expected.op_id]
    expected.born -= adoption.ADOPT_AFTER  # the window has passed
    registry.adoptions._settle()
    assert not registry.adoptions.expected and not registry.adoptions.pending
    op = expected.op
    assert op is not None and op.state is State.RUNNING and op.runner is not None  # watched
    assert registry.cancel_all(wait=True) == [op]
    assert wait_gone(pids, timeout=10) == []


def test_a_spawn_that_raises_is_listed_as_failed():
    registry = Registry(watchdog=False)
    capture = _captured(registry)
    try:
        try:
            subprocess.Popen(["/nonexistent/jupyter-cancel-test"])
        except FileNotFoundError:
            pass
    finally:
        capture.uninstall()
    try:
        (op,) = registry.operations(include_done=True)
        assert registry.wait(op, 10) is State.FAILED and not registry.adoptions.expected
    finally:
        registry.close()


def test_an_expected_spawn_is_named_by_its_command_whatever_popen_was_given():
    from pathlib import Path

    from jupyter_cancel.core.adoption import Expected

    def name(argv):
        return Expected("id", argv, Policy.CANCEL, {}).name()

    assert name(("sh", "-c", "echo a b")) == "sh -c 'echo a b'"
    assert name("echo a b") == "echo a b"
    assert name(Path("/bin/true")) == name(b"/bin/true") == "/bin/true"
    assert name(()) == "process"


def test_a_spawn_that_leaves_a_child_behind_among_instant_ones_is_adopted(tmp_path):
    """One tick settles twenty instant spawns and one whose shell exited at once, its
    `cmd &` still running: that one is adopted (a trigger ends its child), the others end."""
    registry = Registry(watchdog=False)
    ready = tmp_path / "ready"
    capture = _captured(registry)
    try:
        for _ in range(10):
            subprocess.run(["true"])
        subprocess.run(["sh", "-c", f"{sys.executable} {TREE} child {ready} &"])
        for _ in range(10):
            subprocess.run(["true"])
    finally:
        capture.uninstall()
    (pid,) = wait_ready(ready, 1)
    child = {pid: psutil.Process(pid).create_time()}
    try:
        # (Waited for without reading the registry: a listing would make the operations itself.)
        adoptions = registry.adoptions
        until(lambda: not adoptions.expected and not adoptions.pending, 10, "the ticks settled every spawn")
        live = registry.operations()
        assert [o.name.split()[0] for o in live] == ["sh"] and live[0].state is State.RUNNING
        ended = registry.operations(include_done=True)[:-1]
        assert [o.name for o in ended] == ["true"] * 20 and all(o.state is State.COMPLETED for o in ended)
        assert registry.cancel_all(wait=True) == live
        assert wait_gone([pid], timeout=10) == [] and live[0].state is State.CANCELLED
    finally:
        registry.close()
        kill_pids(child)


class _Forking:
    """A ``Popen`` being made: its ``pid`` set once it forked."""

    pid: int | None = None


def test_a_tick_lists_proc_only_when_a_pid_was_handed_out_to_something_not_its_own(monkeypatch):
    """The kernel's pid counter is driven here: a tick whose spawns are the only processes
    started since its first one lists nothing; any other pid handed out meanwhile (a
    grandchild, a thread, another program) makes it list."""
    registry = Registry(watchdog=False)
    adoptions = registry.adoptions
    listed: list[set[str]] = []
    newest = [0]
    monkeypatch.setattr(adoption, "newest_pid", lambda: newest[0])
    monkeypatch.setattr(adoption, "carriers_of", lambda ids, first: listed.append(ids) or {})

    def spawn(pid: int) -> adoption.Expected:
        expected = adoption.Expected(f"x-{pid}", ("true",), Policy.CANCEL, {})
        expected.pid = pid
        return expected

    over = [spawn(1000), spawn(1001), spawn(1002)]
    ids = {e.op_id for e in over}
    try:
        newest[0] = 1002
        assert adoptions._left(ids, over, []) == {} and listed == []
        newest[0] = 1003  # a pid of something else
        assert adoptions._left(ids, over, []) == {} and listed == [ids]
        forking = _Forking()  # ... unless it is a spawn of ours being made: known once forked
        inflight = adoption.Expected("x-next", ("true",), Policy.CANCEL, {})
        inflight.popen = weakref.ref(forking)
        adoptions.expect(inflight)
        assert adoptions._left(ids, over, []) == {} and len(listed) == 2  # not forked yet: listed
        forking.pid = 1003
        assert adoptions._left(ids, over, []) == {} and len(listed) == 2
        newest[0] = 999  # the counter went round: listed
        assert adoptions._left(ids, over, []) == {} and len(listed) == 3
        newest[0] = 1003
        for expected in over:  # a batch older than the counter can be trusted over: listed
            expected.born -= adoption.KNOWN_SPAN
        assert adoptions._left(ids, over, []) == {} and len(listed) == 4
    finally:
        registry.close()
