"""A captured spawn becomes an operation later, in a batch (``Registry.expect``) — and nothing
that reads the registry meanwhile (a listing, a trigger) misses it."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from jupyter_cancel.core import adoption
from jupyter_cancel.core.capture import OwnedCapture
from jupyter_cancel.core.model import Policy, State
from jupyter_cancel.core.registry import Registry
from tests.helpers.procs import TREE, wait_ready
from tests.helpers.wait import wait_gone


def _captured(registry: Registry) -> OwnedCapture:
    capture = OwnedCapture(registry, lambda: {"cell_id": "cell"}, lambda: Policy.CANCEL)
    capture.install()
    return capture


def test_an_instant_process_is_made_an_operation_off_the_spawning_thread():
    registry = Registry(watchdog=False)
    made: list[int] = []
    first = threading.Event()
    real = registry.adoptions._make

    def spy(expected):
        made.append(threading.get_ident())
        first.set()
        return real(expected)

    registry.adoptions._make = spy
    capture = _captured(registry)
    try:
        assert subprocess.run(["true"]).returncode == 0
        assert first.wait(10), "the tick never made its operation"
    finally:
        capture.uninstall()
    try:
        assert made and threading.get_ident() not in made  # the tick's thread, not the spawner's
        (op,) = registry.operations(include_done=True)
        assert registry.wait(op, 10) is State.COMPLETED
        assert (op.name, op.kind, op.cell_id) == ("true", "process", "cell")
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
