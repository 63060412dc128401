"""Every trigger × every tree shape → nothing survives; a bystander with the same command
line is never touched. Real server (in-process), real python3 kernel, real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jupyter_cancel.core.cgroup import Cgroup
from tests.faults.shapes import SHAPES
from tests.helpers.procs import TREE, announced, left_alive, wait_ready
from tests.helpers.server import execute_request, wait_gone
from tests.helpers.server import wait_ready as await_ready
from tests.helpers.wait import until_file_async

CGROUP = Cgroup.available()
#: The env-clearing daemon leaves the tree's session, its parent and its environment: only a
#: cgroup holds it (docs/HOW-IT-WORKS.md: "what still escapes").
SHAPE_NAMES = [s for s in SHAPES if CGROUP or s != "env_clearing_daemon"]
TRIGGERS = [
    "rerun",
    "deleted_cell",
    "interrupt_busy",
    "interrupt_idle",
    "restart",
    "shutdown",
    "kernel_sigkill",
    "tab_closed",
    "rest_stop",
]


async def _start_all(harness, client, tmp: Path) -> dict[str, list[int]]:
    """Every shape in one cell ("work"), each announced in full."""
    lines = ["import jupyter_cancel as jc, sys"]
    for name in SHAPE_NAMES:
        mode, _, opts = SHAPES[name]
        lines.append(
            f"jc.start([sys.executable, {TREE!r}, {mode!r}, {str(tmp / name)!r}], display=False, name={name!r}{opts})"
        )
    r = await client.execute("\n".join(lines), cell="work")
    assert r["reply"]["status"] == "ok", r
    return {name: await await_ready(tmp / name, SHAPES[name][1], timeout=60) for name in SHAPE_NAMES}


async def _fire(trigger: str, harness, kid: str, client) -> None:
    base = ("jupyter-cancel", "api")
    if trigger == "rerun":
        await client.execute("pass", cell="work")
    elif trigger == "deleted_cell":
        msg = execute_request("pass", "other", client.session)
        msg["metadata"]["deletedCells"] = ["work"]
        client.ws.write_message(json.dumps(msg))
        await client.execute("pass", cell="after")  # replies in order: the first one ran
    elif trigger == "interrupt_busy":
        busy = harness.tmp / "busy"
        client.send(f"import os, time; os.close(os.open({str(busy)!r}, os.O_CREAT)); time.sleep(600)", "busy")
        await until_file_async(busy, busy.exists, 30, "the busy cell runs")
        await harness.api("POST", "api", "kernels", kid, "interrupt")
    elif trigger == "interrupt_idle":
        await harness.api("POST", "api", "kernels", kid, "interrupt")
    elif trigger == "restart":
        await harness.api("POST", "api", "kernels", kid, "restart")
    elif trigger == "shutdown":
        await harness.api("DELETE", "api", "kernels", kid)
    elif trigger == "kernel_sigkill":
        manager = harness.app.kernel_manager.get_kernel(kid)
        os.kill(manager.provisioner.process.pid, signal.SIGKILL)
    elif trigger == "tab_closed":
        await harness.api("POST", *base, "clients", client.session, "closed", body={"kernel_id": kid})
    elif trigger == "rest_stop":
        await harness.api("POST", *base, "kernels", kid, "cancel", body={"cell_id": "work"})


@pytest.mark.parametrize("trigger", TRIGGERS)
async def test_trigger_ends_every_shape_and_spares_the_bystander(harness, tmp_path, trigger):
    bystander_ready = tmp_path / "bystander"
    # Same command line as the plain shape's member, started outside Jupyter.
    bystander = subprocess.Popen([sys.executable, TREE, "child", str(bystander_ready)])
    try:
        wait_ready(bystander_ready, 1)
        kid = await harness.start_kernel()
        client = await harness.connect(kid)
        trees = await _start_all(harness, client, tmp_path)
        await harness.api("GET", "jupyter-cancel", "api", "operations")  # the server knows the trees
        await _fire(trigger, harness, kid, client)
        pids = [pid for members in trees.values() for pid in members]
        left = await wait_gone(pids, timeout=15)
        late = announced(tmp_path / "forks_while_dying.late")
        left += await wait_gone(late, timeout=5)
        survivors = {name: left_alive(members) for name, members in trees.items() if left_alive(members)}
        assert left == [], f"{trigger}: survivors {survivors}, late {late}"
        assert bystander.poll() is None, "the bystander was signalled"
    finally:
        bystander.kill()
        bystander.wait()
