"""Triggers the server sees, through a real server, real kernels and real websockets."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from tests.helpers.server import left_alive, wait_gone


async def test_closed_tab_cancels_after_grace_not_before(harness):
    kid = await harness.start_kernel()
    client = await harness.connect(kid)
    pids = await harness.start_tree(client)
    client.close()
    await asyncio.sleep(0.6)  # grace is 1.0 s
    assert left_alive(pids) == pids, "cancelled before the grace ran out"
    assert await wait_gone(pids, timeout=3) == []
    ops = await harness.api("GET", "jupyter-cancel", "api", "operations", params={"kernel_id": kid})
    assert [o["reason"] for o in ops["operations"]] == ["client_disconnected"]


async def test_reconnect_within_grace_keeps_the_work(harness):
    kid = await harness.start_kernel()
    client = await harness.connect(kid)
    pids = await harness.start_tree(client)
    client.close()
    await asyncio.sleep(0.3)
    again = await harness.connect(kid, session=client.session)  # a page reload
    await asyncio.sleep(1.5)
    assert left_alive(pids) == pids
    again.close()
    assert await wait_gone(pids, timeout=4) == []


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
        started = time.monotonic()
        await harness.api("DELETE", "api", "kernels", kid)
        assert await wait_gone(pids, timeout=0.5) == []
        assert time.monotonic() - started < 15
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
