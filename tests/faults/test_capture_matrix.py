"""The stock matrix, with capture: every launch style plain code uses × every trigger → no
survivors, a bystander with the same command line untouched. Real server, real kernel."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from jupyter_cancel.core.platform import PLATFORM_ENV
from tests.faults.test_matrix import TRIGGERS, _fire
from tests.helpers.procs import TREE, announced, left_alive, wait_ready
from tests.helpers.server import wait_gone
from tests.helpers.server import wait_ready as await_ready
from tests.kernel.test_capture import HEAD, STYLES


@pytest.fixture(params=["detected", "portable"])
def kernel_platform(request, monkeypatch):
    """The kernels' backend: what this machine offers, and the portable one (psutil only: no
    pidfd, no cgroup, no /proc reads of ours — what macOS gets), chosen by their environment."""
    if request.param == "portable":
        monkeypatch.setenv(PLATFORM_ENV, "portable")
    return request.param


@pytest.mark.parametrize("trigger", TRIGGERS)
async def test_trigger_ends_what_plain_code_started(harness, tmp_path, trigger, kernel_platform):
    bystander = subprocess.Popen([sys.executable, TREE, "three", str(tmp_path / "bystander")])
    try:
        by = wait_ready(tmp_path / "bystander", 3)
        kid = await harness.start_kernel()
        client = await harness.connect(kid)
        code = (
            HEAD
            + f"TREE = {TREE!r}\n"
            + "\n".join(f"READY = {str(tmp_path / name)!r}\n{launch}" for name, launch in STYLES.items())
        )
        r = await client.execute(code, cell="work")
        assert r["reply"]["status"] == "ok", r
        if kernel_platform == "portable":
            probe = "from jupyter_cancel.core import platform\nprint(platform.current().name)"
            r = await client.execute(probe, cell="probe")
            assert "portable" in r["stdout"], r
        trees = {name: await await_ready(tmp_path / name, 3, timeout=60) for name in STYLES}
        await harness.api("GET", "jupyter-cancel", "api", "operations")  # the server's view is current
        await _fire(trigger, harness, kid, client)
        pids = [pid for members in trees.values() for pid in members]
        left = await wait_gone(pids, timeout=15)
        survivors = {name: left_alive(m) for name, m in trees.items() if left_alive(m)}
        assert left == [], f"{trigger}: survivors {survivors}"
        assert left_alive(by) == by, "the bystander was signalled"
    finally:
        bystander.kill()  # its root; the rest of its tree by pid
        bystander.wait()
        for pid in left_alive(announced(tmp_path / "bystander")):
            os.kill(pid, signal.SIGKILL)
