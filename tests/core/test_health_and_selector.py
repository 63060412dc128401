"""Registry health (overdue work, watchdog) and the Selector's validation."""

from __future__ import annotations

import time

import pytest

from jupyter_cancel.core import CancelScope, Registry
from jupyter_cancel.core.model import short, to_reason
from jupyter_cancel.core.selector import MAX_IDS, Selector


def test_work_that_outlives_its_grace_is_reported_overdue():
    reg = Registry(watchdog=False, grace=0.0)
    scope = CancelScope(
        reg.new(name="stubborn", kind="scope", grace=0.0),
        lambda sc: (reg.attach(sc.operation, sc), reg.register(sc.operation)),
    )
    scope.__enter__()
    assert reg.health()["overdue"] == []
    # A scope that never looks at its cancel: requested, never ended.
    reg.cancel(scope.operation.id, wait=False)
    assert reg.health(now=time.monotonic())["overdue"] == []
    health = reg.health(now=time.monotonic() + 1.5)  # past grace (0) + 1 s
    assert health["overdue"] == [scope.operation.id] and health["running"] == 1
    assert health["watchdog"] == {"used": False, "pid": None, "alive": False}
    scope.__exit__(None, None, None)
    assert reg.health()["overdue"] == []


def test_selector_validates_and_an_empty_one_matches_nothing():
    assert Selector().empty and not Selector().matches({"id": "x"})
    sel = Selector.from_json({"cell_id": "c", "operation_ids": ["a", "b"]})
    assert sel.matches({"id": "a", "cell_id": "c"}) and not sel.matches({"id": "z", "cell_id": "c"})
    assert Selector(all=True).matches({"id": "q"}) and not Selector(all=True).empty
    several = Selector(cell_id=("c", "d"))
    assert several.matches({"id": "a", "cell_id": "d"}) and not several.matches({"id": "a", "cell_id": "e"})
    with pytest.raises(ValueError):
        several.to_json()  # the registry's own: never sent
    assert Selector.from_json(sel.to_json()) == sel
    for bad in (
        {"cell_id": "\ud800"},
        {"cell_id": "x" * 201},
        {"operation_ids": "a"},
        {"operation_ids": ["a"] * (MAX_IDS + 1)},
        {"all": "yes"},
        {"client_session": 3},
    ):
        with pytest.raises(ValueError) as info:
            Selector.from_json(bad)
        assert len(str(info.value)) <= 120


def test_errors_quote_input_short():
    with pytest.raises(ValueError) as info:
        to_reason("x" * 5_000_000)
    assert len(str(info.value)) < 120
    assert len(short("y" * 10_000)) < 90 and short([1] * 100) == "a list of 100 items"


def test_a_process_that_survives_sigkill_is_reported_unkillable(tmp_path, monkeypatch):
    """A process in uninterruptible sleep cannot be made here: a double stands in for the
    kernel's refusal (signals to that one pid are dropped), everything else is real."""
    import os
    import signal

    import jupyter_cancel as jc
    from jupyter_cancel.core import default_registry, proctree
    from jupyter_cancel.core.cgroup import Cgroup
    from tests.helpers.procs import alive, tree_cmd, wait_ready

    monkeypatch.setattr(Cgroup, "create", classmethod(lambda cls, op_id: None))  # cgroup.kill would win
    op = jc.start(tree_cmd("child", tmp_path / "r"), display=False, grace=0.1)
    (stuck,) = wait_ready(tmp_path / "r", 1)
    real_deliver, real_group = proctree._deliver, proctree._deliver_group

    def deliver_unless_stuck(fd, pid, sig):  # every signal to one process leaves through here
        return pid != stuck and real_deliver(fd, pid, sig)

    def group_unless_stuck(pgid, sig):  # and every signal to a group through here
        return pgid != stuck and real_group(pgid, sig)

    monkeypatch.setattr(proctree, "_deliver", deliver_unless_stuck)
    monkeypatch.setattr(proctree, "_deliver_group", group_unless_stuck)
    monkeypatch.setattr(proctree, "KILL_WAIT", 0.2)
    op.cancel()  # bounded: grace, SIGKILL, KILL_WAIT — it never waits forever
    assert op.state is jc.State.CANCELLED and op.unkillable == [stuck] and alive(stuck)
    assert op.to_json()["unkillable"] == [stuck]
    assert default_registry().health()["unkillable"] == [op.id]
    monkeypatch.undo()
    os.kill(stuck, signal.SIGKILL)
    from tests.helpers.wait import wait_gone

    assert wait_gone([stuck]) == []
    assert default_registry().health()["unkillable"] == []
