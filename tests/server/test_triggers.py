"""Triggers the server sees, through a real server, real kernels and real websockets."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from tests.helpers.server import left_alive, wait_gone
from tests.helpers.wait import until_async


class Clock:
    """Stands in for the tracker's ``call_later``: countdowns fire when the test says so."""

    def __init__(self) -> None:
        self.pending: list[Countdown] = []

    def __call__(self, delay, fn):
        countdown = Countdown(delay, fn)
        self.pending.append(countdown)
        return countdown

    def fire(self) -> int:
        due, self.pending = [c for c in self.pending if not c.cancelled], []
        for c in due:
            c.fn()
        return len(due)


class Countdown:
    def __init__(self, delay, fn) -> None:
        self.delay, self.fn, self.cancelled = delay, fn, False

    def cancel(self) -> None:
        self.cancelled = True


@pytest.fixture
def clock(harness):
    clock = Clock()
    harness.app.web_app.settings["jupyter_cancel_tracker"].sessions.call_later = clock
    return clock


async def test_closed_tab_cancels_after_grace_not_before(harness, clock):
    kid = await harness.start_kernel()
    client = await harness.connect(kid)
    pids = await harness.start_tree(client)
    client.close()
    await until_async(lambda: clock.pending, 10, "countdown started")
    assert [c.delay for c in clock.pending] == [1.0]  # JupyterCancel.tab_close_grace
    assert left_alive(pids) == pids, "cancelled before the grace ran out"
    assert clock.fire() == 1  # the grace runs out
    assert await wait_gone(pids, timeout=10) == []
    ops = await harness.api("GET", "jupyter-cancel", "api", "operations", params={"kernel_id": kid})
    assert [o["reason"] for o in ops["operations"]] == ["client_disconnected"]


async def test_reconnect_within_grace_keeps_the_work(harness, clock):
    kid = await harness.start_kernel()
    client = await harness.connect(kid)
    pids = await harness.start_tree(client)
    client.close()
    await until_async(lambda: clock.pending, 10, "countdown started")
    again = await harness.connect(kid, session=client.session)  # a page reload
    await until_async(lambda: clock.pending[0].cancelled, 10, "countdown stopped by the reconnect")
    assert clock.fire() == 0 and left_alive(pids) == pids
    again.close()
    await until_async(lambda: clock.pending, 10, "countdown started again")
    assert clock.fire() == 1
    assert await wait_gone(pids, timeout=10) == []


async def test_continue_policy_survives_a_closed_tab_other_tab_isolated(harness):
    kid = await harness.start_kernel()
    a = await harness.connect(kid)
    b = await harness.connect(kid)  # another browser tab on the same kernel
    keep = await harness.start_tree(a, cell="install", opts=", policy='continue'")
    mine = await harness.start_tree(a, cell="run")
    theirs = await harness.start_tree(b, cell="other")
    a.close()
    assert await wait_gone(mine, timeout=4) == []
    assert left_alive(keep) == keep and left_alive(theirs) == theirs
    r = await harness.api("POST", "jupyter-cancel", "api", "kernels", kid, "cancel", body={})
    assert len(r["cancelled"]) == 2
    assert await wait_gone(keep + theirs) == []


async def test_two_notebooks_two_kernels_are_isolated(harness):
    k1, k2 = await harness.start_kernel(), await harness.start_kernel()
    c1, c2 = await harness.connect(k1), await harness.connect(k2)
    p1, p2 = await harness.start_tree(c1), await harness.start_tree(c2)
    await harness.api("POST", "api", "kernels", k1, "interrupt")
    assert await wait_gone(p1) == []
    assert left_alive(p2) == p2
    await harness.api("DELETE", "api", "kernels", k2)
    assert await wait_gone(p2, timeout=0.5) == []


async def test_rest_interrupt_restart_and_delete_leave_nothing(harness):
    kid = await harness.start_kernel()
    c = await harness.connect(kid)
    pids = await harness.start_tree(c)
    await harness.api("POST", "api", "kernels", kid, "interrupt")
    assert await wait_gone(pids, timeout=1) == []
    pids = await harness.start_tree(c, cell="2")
    await harness.api("POST", "api", "kernels", kid, "restart")
    assert await wait_gone(pids, timeout=0) == [], "restart returned while the tree lived"
    c = await harness.connect(kid)
    pids = await harness.start_tree(c, cell="3")
    await harness.api("DELETE", "api", "kernels", kid)
    assert await wait_gone(pids, timeout=0) == []


async def test_stopped_kernel_tree_is_killed_on_shutdown(harness):
    kid = await harness.start_kernel()
    c = await harness.connect(kid)
    pids = await harness.start_tree(c)
    await harness.api("GET", "jupyter-cancel", "api", "operations")  # the server knows the tree
    kernel_pid = harness.app.kernel_manager.get_kernel(kid).provisioner.process.pid
    os.kill(kernel_pid, signal.SIGSTOP)
    try:
        await harness.api("DELETE", "api", "kernels", kid)
        assert await wait_gone(pids, timeout=0) == []
    finally:
        try:
            os.kill(kernel_pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


async def test_kernel_sigkill_trees_gone(harness):
    kid = await harness.start_kernel()
    c = await harness.connect(kid)
    pids = await harness.start_tree(c)
    kernel_pid = harness.app.kernel_manager.get_kernel(kid).provisioner.process.pid
    os.kill(kernel_pid, signal.SIGKILL)
    assert await wait_gone(pids, timeout=1) == []


async def test_autoloaded_rerun_cancels_previous_run(harness):
    kid = await harness.start_kernel()
    c = await harness.connect(kid)
    old = await harness.start_tree(c, cell="same")
    r = await c.execute("print('second run')", cell="same")
    assert r["stdout"] == "second run\n"
    assert left_alive(old) == []


async def test_cancel_on_tab_close_off_keeps_a_closed_tabs_work(harness, clock):
    harness.app.web_app.settings["jupyter_cancel"].cancel_on_tab_close = False
    kid = await harness.start_kernel()
    client = await harness.connect(kid)
    pids = await harness.start_tree(client)
    tracker = harness.app.web_app.settings["jupyter_cancel_tracker"]
    client.close()
    await until_async(
        lambda: (kid, client.session) not in tracker.sessions.clients, 10, "the server saw the close"
    )
    assert clock.pending == [] and left_alive(pids) == pids
    r = await harness.api("POST", "jupyter-cancel", "api", "kernels", kid, "cancel", body={})
    assert len(r["cancelled"]) == 1 and await wait_gone(pids) == []


async def test_cancel_on_interrupt_off_keeps_work_through_an_interrupt(harness):
    harness.app.web_app.settings["jupyter_cancel"].cancel_on_interrupt = False  # before the kernel starts
    kid = await harness.start_kernel()
    c = await harness.connect(kid)
    pids = await harness.start_tree(c)
    await harness.api("POST", "api", "kernels", kid, "interrupt")
    r = await c.execute("pass", cell="after")  # runs after the kernel handled the SIGINT
    assert r["reply"]["status"] == "ok" and left_alive(pids) == pids
    await harness.api("DELETE", "api", "kernels", kid)
    assert await wait_gone(pids) == []


async def test_server_stop_cancels_with_reason_server_shutdown(harness):
    kid = await harness.start_kernel()
    c = await harness.connect(kid)
    pids = await harness.start_tree(c)
    keep = await harness.start_tree(c, cell="detached", mode="child", count=1, opts=", policy='detach'")
    tracker = harness.app.web_app.settings["jupyter_cancel_tracker"]
    ended = []
    tracker.listeners.add(lambda m: ended.append(m["operation"]) if m["event"] == "ended" else None)
    await tracker.stop()  # what stop_extension runs on server SIGTERM / Ctrl+C
    assert await wait_gone(pids) == []
    assert [(o["cell_id"], o["reason"]) for o in ended] == [("cell-1", "server_shutdown")]
    assert left_alive(keep) == keep, "detach work survives the server"
    for pid in keep:
        os.kill(pid, signal.SIGKILL)
    assert await wait_gone(keep) == []


async def test_control_timeout_is_how_long_the_server_waits_for_a_kernel(harness):
    """With a long control_timeout the server waits for a stopped kernel instead of ending
    its trees itself; once the kernel runs again, the kernel's own cancel answers."""
    app = harness.app.web_app.settings["jupyter_cancel"]
    app.control_timeout = 3600.0
    kid = await harness.start_kernel()
    c = await harness.connect(kid)
    pids = await harness.start_tree(c)
    kernel = harness.app.kernel_manager.get_kernel(kid).provisioner.process.pid
    os.kill(kernel, signal.SIGSTOP)
    request = asyncio.ensure_future(
        harness.api("POST", "jupyter-cancel", "api", "kernels", kid, "cancel", body={})
    )
    try:
        done, _ = await asyncio.wait({request}, timeout=2.0)  # a lower bound: still waiting
        assert not done and left_alive(pids) == pids, "the server did not wait for the kernel"
    finally:
        os.kill(kernel, signal.SIGCONT)
    r = await asyncio.wait_for(request, 30)
    app.control_timeout = 1.0  # the teardown's shutdown must not wait an hour on anything
    assert len(r["cancelled"]) == 1 and await wait_gone(pids) == []
