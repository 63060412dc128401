"""Kernels without the kernel extension — IRkernel, bash_kernel, xeus-python — through a real
server: each starts, in its language's usual way, a tree with a ``setsid`` member and a
double-fork daemon; every trigger ends all of it, a bystander with the same command line lives.

A kernel that is not installed is skipped with a loud reason (``scripts/setup.sh`` installs
all three; IRkernel comes from Debian's r-cran-irkernel).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading

import pytest

from jupyter_cancel.core.model import Reason
from jupyter_cancel.core.selector import Selector
from jupyter_cancel.server.owned import ServerWork
from tests.helpers.foreign import MEMBERS, STARTS, STILL_WORKS, copy_specs, installed
from tests.helpers.procs import TREE, left_alive, wait_ready
from tests.helpers.server import wait_gone
from tests.helpers.server import wait_ready as wait_ready_async
from tests.helpers.wait import until_async

#: Found before pytest-jupyter hides the machine's kernel specs.
_SPECS = installed()
KERNELS = [
    pytest.param(
        name,
        marks=pytest.mark.skipif(
            name not in _SPECS, reason=f"KERNEL NOT INSTALLED: {name} (see scripts/setup.sh)"
        ),
    )
    for name in STARTS
]


@pytest.fixture
def foreign(harness, jp_env_jupyter_path):
    """The machine's foreign kernel specs, visible to the test server."""
    copy_specs(_SPECS, jp_env_jupyter_path / "kernels")
    return harness


async def _start(harness, name: str):
    kid = (await harness.api("POST", "api", "kernels", body={"name": name}))["id"]
    client = await harness.connect(kid)
    harness.n += 1
    ready = harness.tmp / f"ready-{harness.n}"
    code = STARTS[name].format(py=sys.executable, tree=TREE, ready=ready)
    r = await client.execute(code, timeout=60)
    assert r["reply"]["status"] == "ok", r
    pids = await wait_ready_async(ready, MEMBERS)
    return kid, client, pids


def _kernel_pid(harness, kid: str) -> int:
    return harness.app.kernel_manager.get_kernel(kid).provisioner.process.pid


@pytest.fixture
def bystander(tmp_path):
    """A process with the same command line as the kernels' work, not started by a kernel."""
    ready = tmp_path / "bystander"
    proc = subprocess.Popen([sys.executable, TREE, "setsid", str(ready)])
    pids = wait_ready(ready, 3)
    yield pids
    assert left_alive(pids) == pids, "a bystander was signalled"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    proc.wait()


async def _listed(harness, kid: str) -> list[dict]:
    ops = await harness.api("GET", "jupyter-cancel", "api", "operations", params={"kernel_id": kid})
    return [op for op in ops["operations"] if op["state"] == "running"]


@pytest.mark.parametrize("name", KERNELS)
async def test_restart_ends_the_work(foreign, bystander, name):
    kid, _, pids = await _start(foreign, name)
    await foreign.api("POST", "api", "kernels", kid, "restart")
    assert await wait_gone(pids, timeout=10) == []


@pytest.mark.parametrize("name", KERNELS)
async def test_shutdown_ends_the_work(foreign, bystander, name):
    kid, _, pids = await _start(foreign, name)
    await foreign.api("DELETE", "api", "kernels", kid)
    assert await wait_gone(pids, timeout=10) == []


@pytest.mark.parametrize("name", KERNELS)
async def test_kernel_killed_ends_the_work(foreign, bystander, name):
    kid, _, pids = await _start(foreign, name)
    os.kill(_kernel_pid(foreign, kid), signal.SIGKILL)
    assert await wait_gone(pids, timeout=10) == []


@pytest.mark.parametrize("name", KERNELS)
async def test_last_tab_closed_ends_the_work(foreign, bystander, jp_serverapp, name):
    jp_serverapp.web_app.settings["jupyter_cancel"].tab_close_grace = 0.0
    kid, client, pids = await _start(foreign, name)
    other = await foreign.connect(kid)  # a second tab: closing one keeps the work
    client.close()
    await until_async(
        lambda: len(foreign.app.web_app.settings["jupyter_cancel_tracker"].sessions.clients) == 1, 10
    )
    assert left_alive(pids) == pids
    other.close()
    assert await wait_gone(pids, timeout=10) == []
    assert _kernel_pid(foreign, kid) > 0 and left_alive([_kernel_pid(foreign, kid)])  # the kernel lives


@pytest.mark.parametrize("name", KERNELS)
async def test_stop_from_the_panel(foreign, bystander, name):
    kid, client, pids = await _start(foreign, name)
    listed = await _listed(foreign, kid)
    assert sorted(p for op in listed for p in op["pids"]) == sorted(pids), listed
    assert all(op["kind"] == "process" and TREE in op["name"] for op in listed)
    for op in listed:
        await foreign.api(
            "POST", "jupyter-cancel", "api", "operations", op["id"], "cancel", body={"reason": "user"}
        )
    assert await wait_gone(pids, timeout=10) == []
    ops = await foreign.api("GET", "jupyter-cancel", "api", "operations", params={"kernel_id": kid})
    assert {op["state"] for op in ops["operations"]} == {"cancelled"}
    assert {op["reason"] for op in ops["operations"]} == {"user"}
    r = await client.execute(STILL_WORKS[name], timeout=60)  # the kernel itself was left alone
    assert r["reply"]["status"] == "ok" and "42" in r["stdout"], r


@pytest.mark.parametrize("name", KERNELS)
async def test_interrupt_ends_what_escaped_the_kernels_group(foreign, bystander, name):
    kid, _, pids = await _start(foreign, name)
    kernel = _kernel_pid(foreign, kid)
    escaped = [p for p in pids if os.getpgid(p) != os.getpgid(kernel)]
    assert escaped, "the setsid member and the daemon left the kernel's group"
    await foreign.api("POST", "api", "kernels", kid, "interrupt")
    assert await wait_gone(escaped, timeout=10) == []
    await foreign.api("DELETE", "api", "kernels", kid)
    assert await wait_gone(pids, timeout=10) == []


async def test_off_leaves_foreign_kernels_alone(foreign, jp_serverapp):
    """``foreign_kernels = "off"``: stock behaviour (the daemon outlives the shutdown)."""
    name = next((n for n in STARTS if n in _SPECS), None)
    if name is None:
        pytest.skip("NO FOREIGN KERNEL INSTALLED")
    jp_serverapp.web_app.settings["jupyter_cancel"].foreign_kernels = "off"
    kid, _, pids = await _start(foreign, name)
    await foreign.api("DELETE", "api", "kernels", kid)
    try:
        assert left_alive(pids), "nothing survived: the setting did nothing"
    finally:
        for pid in left_alive(pids):
            os.kill(pid, signal.SIGKILL)
        await wait_gone(pids, timeout=10)


@pytest.mark.parametrize("name", KERNELS)
async def test_server_stop_ends_the_work_kernel_lives_until_shut_down(foreign, bystander, name):
    kid, _, pids = await _start(foreign, name)
    tracker = foreign.app.web_app.settings["jupyter_cancel_tracker"]
    ended = []
    tracker.listeners.add(lambda m: ended.append(m["operation"]) if m["event"] == "ended" else None)
    await tracker.stop()  # what stop_extension runs on server SIGTERM / Ctrl+C
    assert await wait_gone(pids, timeout=10) == []
    assert {o["reason"] for o in ended} == {"server_shutdown"} and all(o["foreign"] for o in ended)
    assert left_alive([_kernel_pid(foreign, kid)]), "the kernel is jupyter_server's to shut down"


async def test_a_scan_during_a_cancel_leaves_the_end_to_the_cancel(foreign, monkeypatch):
    """A scan (the poller's, while anyone watches) that finds cancelled work gone before its
    canceller has reported the end does not call it ended by itself: the end is reported once,
    with the cancel's reason (seen in CI: a server stop's work reported as completed)."""
    name = next((n for n in STARTS if n in _SPECS), None)
    if name is None:
        pytest.skip("NO FOREIGN KERNEL INSTALLED")
    kid, _, pids = await _start(foreign, name)
    tracker = foreign.app.web_app.settings["jupyter_cancel_tracker"]
    reported = threading.Event()  # the canceller's report of the end waits for it
    wait = ServerWork.wait

    def held_wait(self, chosen):
        ended = wait(self, chosen)
        reported.wait(60)
        return ended

    monkeypatch.setattr(ServerWork, "wait", held_wait)
    ended = []
    tracker.listeners.add(lambda m: ended.append(m["operation"]) if m["event"] == "ended" else None)
    cancel = asyncio.ensure_future(tracker.cancel(kid, Reason.SERVER_SHUTDOWN, Selector(all=True)))
    try:
        assert await wait_gone(pids, timeout=10) == []
        await tracker.foreign.scan(kid)  # finds them gone, the cancel still under way
        assert ended == []
    finally:
        reported.set()
        await cancel
    assert ended and {o["reason"] for o in ended} == {"server_shutdown"}
    assert len({o["id"] for o in ended}) == len(ended)


async def test_continue_keeps_work_when_the_last_tab_closes(foreign, jp_serverapp):
    name = next((n for n in STARTS if n in _SPECS), None)
    if name is None:
        pytest.skip("NO FOREIGN KERNEL INSTALLED")
    app = jp_serverapp.web_app.settings["jupyter_cancel"]
    app.foreign_kernels, app.tab_close_grace = "continue", 0.0
    kid, client, pids = await _start(foreign, name)
    tracker = jp_serverapp.web_app.settings["jupyter_cancel_tracker"]
    client.close()
    await until_async(lambda: not tracker.sessions.clients, 10, "the client gone")
    assert await foreign.api(
        "POST", "jupyter-cancel", "api", "clients", client.session, "closed", body={"kernel_id": kid}
    ) == {"cancelled": []}
    assert left_alive(pids) == pids
    await foreign.api("DELETE", "api", "kernels", kid)  # a shutdown still ends it
    assert await wait_gone(pids, timeout=10) == []
