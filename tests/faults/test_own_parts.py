"""Faults of our own parts and of the machine: the server killed or stopped, the kernel out of
file descriptors. Each ends with nothing left running and the suite's leak fixture agreeing."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import uuid

import psutil
import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from tests.helpers.lab import LabServer
from tests.helpers.procs import TREE, left_alive, wait_ready
from tests.helpers.server import Client


async def _client(server: LabServer, kernel_id: str) -> Client:
    session = str(uuid.uuid4())
    url = server.url.replace("http", "ws") + f"/api/kernels/{kernel_id}/channels?session_id={session}"
    ws = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {server.token}"}))
    return Client(ws, session)


def _start_work(server: LabServer, tmp_path) -> tuple[int, list[int]]:
    """A kernel running a setsid tree and a daemon; (kernel pid, member pids)."""
    kid = server.http.post("/api/kernels", json={"name": "python3"}).json()["id"]

    async def run() -> int:
        c = await _client(server, kid)
        code = (
            "import jupyter_cancel as jc, sys, os\n"
            f"jc.start([sys.executable, {TREE!r}, 'three', {str(tmp_path / 'a')!r}], display=False)\n"
            f"jc.start([sys.executable, {TREE!r}, 'daemon', {str(tmp_path / 'b')!r}], display=False)\n"
            "print(os.getpid())"
        )
        r = await c.execute(code, timeout=90)
        c.close()
        while await asyncio.wait_for(c.ws.read_message(), 10) is not None:
            pass  # until the close completed: its socket is closed before the loop ends
        assert r["reply"]["status"] == "ok", r
        return int(r["stdout"])

    kernel = asyncio.run(run())
    return kernel, wait_ready(tmp_path / "a", 3) + wait_ready(tmp_path / "b", 2)


def _gone(pids: list[int], timeout: float) -> list[int]:
    _, alive = psutil.wait_procs([p for p in map(_proc, pids) if p is not None], timeout=timeout)
    return [p.pid for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def _proc(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["server_sigterm", "server_sigkill"])
def test_server_death_takes_the_work_with_it(tmp_path, sig):
    server = LabServer(tmp_path, module="jupyter_server")
    try:
        kernel, pids = _start_work(server, tmp_path)
        os.kill(server.proc.pid, sig)  # the server alone, not its process group
        server.proc.wait(30)
        # SIGTERM: stop_extension cancels; SIGKILL: the kernel sees its parent gone and exits.
        assert _gone(pids + [kernel], 30) == []
    finally:
        if server.proc.poll() is None:
            server.stop()
        else:
            server.http.close()
            server.log.close()
        leftovers = [p for p in (server.proc.pid,) if left_alive([p])]
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)


async def test_kernel_out_of_file_descriptors_fails_cleanly_and_recovers(harness, tmp_path):
    kid = await harness.start_kernel()
    c = await harness.connect(kid)
    pids = await harness.start_tree(c, cell="before")
    code = (
        "import resource, os, sys, jupyter_cancel as jc\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "held = []\n"
        "try:\n"
        "    while True: held.append(os.open(os.devnull, os.O_RDONLY))\n"
        "except OSError: pass\n"
        "try:\n"
        f"    jc.start([sys.executable, {TREE!r}, 'child', {str(tmp_path / 'x')!r}], display=False)\n"
        "    print('started')\n"
        "except OSError as err:\n"
        "    print(f'refused {err.errno}')\n"  # one write: another thread may print between two
        "finally:\n"
        "    for fd in held: os.close(fd)\n"
        "    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))\n"
    )
    r = await c.execute(code, cell="exhaust")
    assert r["reply"]["status"] == "ok", r
    # (IPython's history thread may print its own out-of-descriptors complaint first.)
    assert re.search(r"refused \d+", r["stdout"]) and "started" not in r["stdout"], r["stdout"]
    # The kernel is still ours: a legitimate cancel works, and new work starts.
    again = await harness.start_tree(c, cell="after")
    got = await harness.api("POST", "jupyter-cancel", "api", "kernels", kid, "cancel", body={})
    assert len(got["cancelled"]) == 2
    assert _gone(pids + again, 10) == []
