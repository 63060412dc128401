"""The registry: selection, idempotent cancel, tombstones, supersede, events, threads."""

from __future__ import annotations

import threading

import pytest

import jupyter_cancel as jc
from jupyter_cancel.core import CancelScope, Registry, api
from jupyter_cancel.core.selector import Selector
from tests.helpers.procs import alive, tree_cmd, wait_ready
from tests.helpers.wait import until


def _sleep_op(reg: Registry, **owner):
    op = reg.new(name="s", kind="scope", owner=owner)
    return op


def test_select_by_cell_session_kernel_and_cancel_is_idempotent():
    reg = Registry(watchdog=False)
    scopes = []
    for cell, session in [("a", "s1"), ("a", "s2"), ("b", "s1")]:
        s = CancelScope(
            reg.new(
                name=cell, kind="scope", owner={"cell_id": cell, "client_session": session, "kernel_id": "k"}
            ),
            lambda sc: (reg.attach(sc.operation, sc), reg.register(sc.operation)),
        )
        s.__enter__()
        scopes.append(s)
    assert {o.name for o in reg.select(Selector(cell_id="a"))} == {"a"}
    assert len(reg.select(Selector(client_session="s1"))) == 2
    assert len(reg.select(Selector(kernel_id="k"))) == 3
    assert reg.select(Selector()) == []  # empty names nothing
    assert len(reg.select(Selector(all=True))) == 3  # everything is said
    assert {o.name for o in reg.select(Selector(cell_id=("a", "b")))} == {"a", "b"}
    first = reg.cancel_where(Selector(cell_id="a"), "cell_rerun", wait=False)
    assert len(first) == 2 and all(s.cancelled for s in scopes[:2]) and not scopes[2].cancelled
    assert reg.cancel_where(Selector(cell_id="a"), "cell_rerun", wait=False) == []  # idempotent
    for s in scopes:
        s.__exit__(None, None, None)
    assert [s.operation.state.value for s in scopes] == ["cancelled", "cancelled", "completed"]
    assert scopes[0].operation.reason == "cell_rerun"


def test_policies_shield_from_the_triggers_they_name():
    reg = Registry(watchdog=False)
    ops = {}
    for policy in ("cancel", "continue", "detach"):
        op = reg.new(name=policy, kind="scope", policy=policy)
        reg.register(op)
        ops[policy] = op
    assert {o.name for o in reg.cancel_all("tab_closed", wait=False)} == {"cancel"}
    assert {o.name for o in reg.cancel_all("kernel_shutdown", wait=False)} == {"continue"}
    assert reg.cancel_all("kernel_died", wait=False) == []
    assert [o.name for o in reg.cancel(ops["detach"].id, "user", wait=False)] == ["detach"]


def test_cancel_before_register_is_remembered_and_applied():
    reg = Registry(watchdog=False)
    op = reg.new(name="late", kind="scope")
    assert reg.cancel(op.id, "user", remember=True) == []
    assert reg.register(op) is False
    assert op.state is jc.State.CANCELLED and op.reason == "user"


def test_tombstones_are_bounded(monkeypatch):
    from jupyter_cancel.core import ledger

    monkeypatch.setattr(ledger, "TOMBSTONE_MAX", 50)
    reg = Registry(watchdog=False)
    for i in range(500):
        reg.cancel(f"x-{i}", remember=True)
    assert len(reg._book._tombstones) <= 50
    monkeypatch.setattr(ledger, "TOMBSTONE_TTL", -1.0)
    reg.cancel("expired", remember=True)
    op = reg.new(name="n", kind="scope", op_id="expired")
    assert reg.register(op) is True  # an expired tombstone does not apply


def test_bad_input_is_refused_and_changes_nothing():
    with pytest.raises(KeyError, match="no-such-op"):
        jc.cancel("no-such-op")
    with pytest.raises(ValueError, match="policy"):
        jc.start(["true"], policy="sometimes")
    with pytest.raises(ValueError, match="grace"):
        jc.start(["true"], grace=-1)
    with pytest.raises(ValueError, match="grace"):
        jc.start(["true"], grace="2")
    with pytest.raises(ValueError, match="timeout"):
        jc.start(["true"], timeout=0)
    with pytest.raises(ValueError, match="reason"):
        jc.cancel_all(reason="")
    with pytest.raises(TypeError):
        jc.cancel(42)
    with pytest.raises(ValueError, match="empty"):
        jc.start([])
    with pytest.raises(FileNotFoundError):
        jc.start(["/nonexistent/binary"], display=False)
    assert jc.operations() == []


def test_supersede_waits_until_old_tree_that_ignores_sigterm_is_dead(tmp_path):
    old = jc.start(tree_cmd("ignore_term", tmp_path / "old"), key="cell-1", grace=0.5, display=False)
    (old_pid,) = wait_ready(tmp_path / "old", 1)
    new = jc.start(tree_cmd("child", tmp_path / "new"), key="cell-1", display=False)
    # It ignores SIGTERM: gone only through the SIGKILL after its grace, before the new one started.
    assert not alive(old_pid), "the new work started while the old tree was alive"
    assert old.state is jc.State.CANCELLED and old.reason == "superseded"
    wait_ready(tmp_path / "new", 1)
    assert [o.id for o in jc.operations()] == [new.id]
    new.cancel()


def test_supersede_is_bounded_when_old_work_cannot_stop():
    reg = Registry(watchdog=False, grace=0.2)
    stuck = reg.new(name="stuck", kind="scope", key="k")
    stuck_scope = CancelScope(stuck, lambda s: (reg.attach(stuck, s), reg.register(stuck)))
    release = threading.Event()

    def stuck_thread():  # a thread stuck in C code: never checks its scope
        with stuck_scope:
            release.wait(10)

    t = threading.Thread(target=stuck_thread)
    t.start()
    until(lambda: reg.select(Selector(key="k")), 10, "stuck scope registered")
    new = reg.new(name="new", kind="scope", key="k")
    # Bounded (grace + 1 s): registering returns although the old work never stopped.
    assert reg.register(new) is True
    assert stuck.cancel_requested and not stuck.done
    release.set()
    t.join(5)
    assert stuck.state is jc.State.CANCELLED


def test_many_operations_from_eight_threads_nothing_leaked(tmp_path):
    reg = Registry(watchdog=False)
    errors = []

    def worker(n):
        try:
            for i in range(125):
                op = reg.new(name=f"{n}-{i}", kind="scope", owner={"cell_id": f"c{n}"})
                sc = CancelScope(op, lambda s, op=op: (reg.attach(op, s), reg.register(op)))
                sc.__enter__()
                if i % 2:
                    reg.cancel(op.id, wait=False)
                sc.__exit__(None, None, None)
        except BaseException as err:  # surfaced below (a Cancelled too)
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert reg.operations() == []
    done = reg.operations(include_done=True)
    assert len(done) == 200  # history is bounded
    assert {o.state for o in done} <= {jc.State.CANCELLED, jc.State.COMPLETED}


def test_process_operations_from_threads_all_cancelled(tmp_path):
    ops, lock = [], threading.Lock()

    def worker(n):
        for _ in range(5):
            op = jc.start(["sleep", "60"], display=False)
            with lock:
                ops.append(op)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pids = [p for op in ops for p in op.pids()]
    assert len(pids) >= 40
    assert len(jc.cancel_all()) == 40
    assert [p for p in pids if alive(p)] == []
    assert all(op.state is jc.State.CANCELLED for op in ops)


def test_slow_subscriber_never_delays_a_cancel(tmp_path):
    reg = Registry(watchdog=False)
    seen, release = [], threading.Event()

    def slow(event, data):
        release.wait(5)
        seen.append((event, data["state"], data.get("reason")))

    def broken(event, data):
        raise RuntimeError("subscriber bug")

    reg.subscribe(slow)
    reg.subscribe(broken)
    op = reg.new(name="x", kind="scope")
    reg.register(op)
    # The subscriber blocks until released: cancelling and finishing must not wait for it.
    reg.cancel(op.id, wait=False)
    reg.finish(op, jc.State.CANCELLED)
    assert op.state is jc.State.CANCELLED and not release.is_set()
    release.set()
    until(lambda: len(seen) >= 3, 5, "three events delivered")
    assert seen == [
        ("started", "running", None),
        ("cancel_requested", "running", "user"),
        ("ended", "cancelled", "user"),
    ]


def test_timeout_cancels_with_reason_timeout():
    op = jc.start(["sleep", "60"], timeout=0.3, display=False)
    assert op.wait(5) is jc.State.CANCELLED
    assert op.reason == "timeout" and op.exit_code == 130


def test_run_raises_cancelled_and_output_is_a_bounded_tail():
    op = jc.run(
        ["python3", "-c", "import sys\nfor i in range(20000): sys.stdout.write('x'*99+'\\n')"], display=False
    )
    assert op.state is jc.State.COMPLETED and len(op.output) == 64 * 1024
    with pytest.raises(jc.Cancelled) as info:
        # Cancelled from another thread once it runs (as a Stop button would).
        jc.run(["sleep", "60"], display=False, on_start=_cancel_once_running)
    assert info.value.reason == "user" and info.value.operation.exit_code == 130
    assert info.value._render_traceback_()[0].endswith("sleep 60 — by you")


def test_default_policy_applies_to_work_that_names_none():
    api.set_default_policy("continue")
    try:
        with jc.scope("s") as s:
            assert s.operation.policy is jc.Policy.CONTINUE
        op = jc.start(["true"], display=False)
        assert op.policy is jc.Policy.CONTINUE
        assert jc.start(["true"], display=False, policy="cancel").policy is jc.Policy.CANCEL
        with pytest.raises(ValueError, match="policy"):
            api.set_default_policy("sometimes")
    finally:
        api.set_default_policy("cancel")
    assert jc.start(["true"], display=False).policy is jc.Policy.CANCEL


def _cancel_once_running(op):
    def cancel() -> None:
        until(lambda: op.pids(), 10, "process up")
        op.cancel()

    threading.Thread(target=cancel, daemon=True).start()
