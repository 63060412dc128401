"""Kernels without the kernel extension — IRkernel, bash_kernel, xeus-python — through a real
server: each starts, in its language's usual way, a tree with a ``setsid`` member and a
double-fork daemon; every trigger ends all of it, a bystander with the same command line lives.

A kernel that is not installed is skipped with a loud reason (``scripts/setup.sh`` installs
all three; IRkernel comes from Debian's r-cran-irkernel).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

from tests.helpers.procs import TREE, left_alive, wait_ready
from tests.helpers.server import wait_gone
from tests.helpers.server import wait_ready as wait_ready_async
from tests.helpers.wait import until_async

#: Found before pytest-jupyter hides the machine's kernel specs.
_SPECS = KernelSpecManager().find_kernel_specs()
#: How each language starts work in the background, as its users would.
STARTS = {
    "ir": 'system("{py} {tree} setsid {ready}", wait = FALSE)\nsystem("{py} {tree} daemon {ready}", wait = FALSE)',
    "bash": "{py} {tree} setsid {ready} &\n{py} {tree} daemon {ready} &",
    "xpython": (
        "import subprocess\n"
        "subprocess.Popen(['{py}', '{tree}', 'setsid', '{ready}'], start_new_session=True)\n"
        "subprocess.Popen(['{py}', '{tree}', 'daemon', '{ready}'])"
    ),
}
STILL_WORKS = {"ir": "cat(6 * 7)", "bash": "echo $((6 * 7))", "xpython": "print(6 * 7)"}
#: setsid: root, child, setsid grandchild; daemon: root, reparented grandchild.
MEMBERS = 5
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
    """The machine's foreign kernel specs, visible to the test server; grace 0 for tab close."""
    for name, folder in _SPECS.items():
        if name in STARTS:
            target = jp_env_jupyter_path / "kernels" / name
            shutil.copytree(folder, target, dirs_exist_ok=True)
            # bash_kernel writes a key KernelSpec does not know (a traitlets deprecation
            # warning, an error under this suite's -W error): keep the known ones.
            spec = json.loads((target / "kernel.json").read_text())
            known = set(KernelSpec.class_trait_names())
            (target / "kernel.json").write_text(json.dumps({k: v for k, v in spec.items() if k in known}))
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
    await until_async(lambda: len(foreign.app.web_app.settings["jupyter_cancel_tracker"].clients) == 1, 10)
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
