"""Defects found under faults, bad input and churn — each test failed on the code before its fix."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal

import psutil
import pytest
from tornado.httpclient import HTTPClientError

from tests.helpers.server import left_alive, wait_gone
from tests.helpers.wait import until_async

BASE = ("jupyter-cancel", "api")


async def _health(harness, kid):
    kernels = (await harness.api("GET", *BASE, "health"))["kernels"]
    return next((k for k in kernels if k["kernel_id"] == kid), None)


async def test_auto_restarted_kernel_gets_the_extension_back(harness):
    """Defect 1: jupyter_client's restarter calls the kernel's own manager, not the multi one."""
    kid = await harness.start_kernel()
    c = await harness.connect(kid)
    await harness.start_tree(c, cell="before")
    manager = harness.app.kernel_manager.get_kernel(kid)
    first = manager.provisioner.process.pid
    os.kill(first, signal.SIGKILL)

    async def restarted():
        process = getattr(manager.provisioner, "process", None)
        if process is None or process.pid == first:
            return False
        health = await _health(harness, kid)
        return health is not None and health["extension"] and health["watchdog_alive"]

    await until_async(restarted, 60, "kernel not restarted with the extension")
    c2 = await harness.connect(kid)
    pids = await harness.start_tree(c2, cell="after")
    ops = (await harness.api("GET", *BASE, "operations", params={"kernel_id": kid}))["operations"]
    assert [o["cell_id"] for o in ops if o["state"] == "running"] == ["after"]
    await harness.api("POST", "api", "kernels", kid, "interrupt")
    assert await wait_gone(pids) == []


async def test_killed_watchdog_is_replaced_and_still_covers_kernel_death(harness):
    """Defect 2: a SIGKILLed watchdog is restarted and given the live trees again."""
    kid = await harness.start_kernel()
    c = await harness.connect(kid)
    pids = await harness.start_tree(c)
    health = await _health(harness, kid)  # start_tree ran jc.start: the extension is loaded
    old = health["watchdog_pid"]
    assert health["extension"] and health["watchdog_alive"] and old
    os.kill(old, signal.SIGKILL)

    async def replaced():
        h = await _health(harness, kid)
        return h if h and h["watchdog_alive"] and h["watchdog_pid"] not in (None, old) else None

    new = (await until_async(replaced, 30, "watchdog not replaced"))["watchdog_pid"]
    # The server's own fallback is out of the picture: it must be the new watchdog that acts.
    harness.app.web_app.settings["jupyter_cancel_tracker"].drop(kid)
    manager = harness.app.kernel_manager.get_kernel(kid)
    manager.autorestart = False
    os.kill(manager.provisioner.process.pid, signal.SIGKILL)
    assert await wait_gone(pids) == []
    assert await wait_gone([new]) == []  # it did its job and exited


@pytest.mark.parametrize(
    "body",
    [
        "[" * 100_000,
        '{"reason": "\\ud800"}',
        '{"cell_id": "\\ud800"}',
        '{"client_session": "a\\udfffb"}',
        json.dumps({"reason": "x" * (5 * 1024 * 1024)}),
        json.dumps({"reason": "x" * 201}),
    ],
    ids=["nested", "surrogate-reason", "surrogate-cell", "surrogate-session", "5MiB-reason", "201-reason"],
)
async def test_bad_bodies_are_short_400s(harness, jp_fetch, body):
    """Defects 3 and 4: 400, never a 500; the answer is short."""
    kid = await harness.start_kernel()
    c = await harness.connect(kid)
    pids = await harness.start_tree(c)
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch(*BASE, "kernels", kid, "cancel", method="POST", body=body)
    assert info.value.code == 400
    assert len(info.value.response.body) <= 1024
    assert left_alive(pids) == pids
    # The kernel still answers a legitimate cancel.
    r = await harness.api("POST", *BASE, "kernels", kid, "cancel", body={})
    assert len(r["cancelled"]) == 1 and await wait_gone(pids) == []


async def test_unknown_long_ids_are_short_404s(harness, jp_fetch):
    kid = await harness.start_kernel()
    for parts in (("operations", "x" * 60_000, "cancel"), ("kernels", "y" * 60_000, "cancel")):
        with pytest.raises(HTTPClientError) as info:
            await jp_fetch(*BASE, *parts, method="POST", body="{}")
        assert info.value.code == 404 and len(info.value.response.body) <= 1024
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch(*BASE, "clients", "\N{SNOWMAN}" * 300, "closed", method="POST", body="{}")
    assert info.value.code == 400 and len(info.value.response.body) <= 1024
    assert kid in harness.app.kernel_manager


async def test_instant_operations_keep_event_order_and_the_gauge(harness, jp_fetch):
    """Defect 5: work that ends as it starts was seen as started, ended, started."""
    ws = await harness.ws_fetch(*BASE, "events")
    await ws.read_message()  # snapshot
    kid = await harness.start_kernel()
    c = await harness.connect(kid)
    n = 300
    r = await c.execute(
        f"import jupyter_cancel as jc\nfor _ in range({n}): jc.start(['true'], display=False).wait(5)",
        timeout=120,
    )
    assert r["reply"]["status"] == "ok", r
    seq: dict[str, list[str]] = collections.defaultdict(list)
    ended = 0
    while ended < n:
        msg = json.loads(await asyncio.wait_for(ws.read_message(), 30))
        seq[msg["operation"]["id"]].append(msg["event"])
        ended += msg["event"] == "ended"
    ws.close()
    bad = {k: v for k, v in seq.items() if v != ["started", "ended"]}
    assert len(seq) == n and not bad, bad
    text = (await jp_fetch("metrics")).body.decode()
    assert "\njupyter_cancel_running_operations 0.0\n" in text


async def test_a_link_that_joins_late_still_publishes_what_it_missed(harness):
    """Defect 5b: the server's iopub subscription to a kernel is live only some time after it
    connects (ZMQ's slow joiner); work that started and ended before was never seen (the
    events websocket waited in vain, 1 CI run in 3). Here the link joins after a whole cell;
    the next cells' messages are what it first hears."""
    ws = await harness.ws_fetch(*BASE, "events")
    await ws.read_message()  # snapshot
    kid = await harness.start_kernel()
    c = await harness.connect(kid)
    tracker = harness.app.web_app.settings["jupyter_cancel_tracker"]
    tracker.drop(kid)  # no subscription: what the kernel publishes now reaches no one
    n = 5
    r = await c.execute(
        f"import jupyter_cancel as jc\nfor _ in range({n}): jc.start(['true'], display=False).wait(5)"
    )
    assert r["reply"]["status"] == "ok", r
    assert kid not in tracker.links
    tracker.link(kid)  # subscribes late
    seq: dict[str, list[str]] = collections.defaultdict(list)
    for _ in range(30):  # a cell at a time, until the link has joined and caught up
        if sum(v[-1:] == ["ended"] for v in seq.values()) >= n:
            break
        assert (await c.execute("pass", cell="next"))["reply"]["status"] == "ok"
        try:
            while True:
                msg = json.loads(await asyncio.wait_for(ws.read_message(), 1.0))
                seq[msg["operation"]["id"]].append(msg["event"])
        except asyncio.TimeoutError:
            pass
    ws.close()
    assert list(seq.values()) == [["started", "ended"]] * n


async def test_server_fallback_uses_the_operations_own_grace(harness):
    """Defect 6: the tree the server terminates itself has the operation's grace."""
    kid = await harness.start_kernel()
    c = await harness.connect(kid)
    await harness.start_tree(c, opts=", grace=0.25")
    tracker = harness.app.web_app.settings["jupyter_cancel_tracker"]
    await tracker.refresh(kid)
    (op,) = tracker.links[kid].live.values()
    assert op["grace"] == 0.25 and tracker.app.grace == 1.0
    assert tracker._tree(op).grace == 0.25
    await harness.api("POST", *BASE, "kernels", kid, "cancel", body={})


async def test_deleting_a_stopped_kernel_does_not_wait_for_a_shutdown_reply(harness):
    """Defect 7: an unanswered control request means the kernel is killed at once."""
    kid = await harness.start_kernel()
    c = await harness.connect(kid)
    pids = await harness.start_tree(c)
    await harness.api("GET", *BASE, "operations")
    manager = harness.app.kernel_manager.get_kernel(kid)
    asked = []
    original = manager._async_request_shutdown  # jupyter_client: what a shutdown without now=True sends

    async def request_shutdown(*args, **kwargs):
        asked.append(args)
        return await original(*args, **kwargs)

    manager._async_request_shutdown = request_shutdown
    kernel = psutil.Process(manager.provisioner.process.pid)
    kernel.send_signal(signal.SIGSTOP)
    try:
        await harness.api("DELETE", "api", "kernels", kid)
        assert await wait_gone(pids, timeout=0) == []
        # Killed at once: no shutdown_request that a stopped kernel would leave unanswered for
        # jupyter_client's shutdown_wait_time (5 s). The bound is bench/'s business.
        assert asked == []
        assert not kernel.is_running() or kernel.status() == psutil.STATUS_ZOMBIE
    finally:
        try:
            kernel.send_signal(signal.SIGCONT)
        except psutil.NoSuchProcess:
            pass


async def test_health_lists_each_kernel(harness):
    kid = await harness.start_kernel()

    async def loaded():
        h = await _health(harness, kid)
        return h if h and h["extension"] else None

    h = await until_async(loaded, 30, "extension never answered")
    assert h["watchdog_alive"] and h["running"] == 0
    assert h["unkillable"] == [] and h["overdue"] == []


async def test_kernels_share_the_servers_watchdog_and_a_killed_kernels_trees_end(harness):
    """One watchdog process for the server's kernels (not one each); a kernel's SIGKILL ends
    its trees through it while the other kernel's trees live on."""
    k1, k2 = await harness.start_kernel(), await harness.start_kernel()
    c1, c2 = await harness.connect(k1), await harness.connect(k2)
    p1, p2 = await harness.start_tree(c1), await harness.start_tree(c2)
    h1, h2 = await _health(harness, k1), await _health(harness, k2)
    assert h1["watchdog_alive"] and h1["watchdog_pid"] == h2["watchdog_pid"]
    shared = psutil.Process(h1["watchdog_pid"])
    assert shared.ppid() == os.getpid(), "the server's watchdog, not a kernel's"
    harness.app.web_app.settings["jupyter_cancel_tracker"].drop(k1)  # the watchdog must act
    manager = harness.app.kernel_manager.get_kernel(k1)
    manager.autorestart = False
    os.kill(manager.provisioner.process.pid, signal.SIGKILL)
    assert await wait_gone(p1) == []
    assert left_alive(p2) == p2 and shared.is_running()
