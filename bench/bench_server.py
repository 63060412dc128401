"""End-to-end server benchmark (not a test): trigger → whole tree gone, through a
`jupyter server` subprocess on 127.0.0.1, a websocket client that executes cells like
JupyterLab, and a 3-process SIGTERM-respecting tree with a setsid grandchild.

    .venv/bin/python bench/bench_server.py [--n 20]

Then the same scenarios with the extension disabled: how many processes survive.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.helpers.procs import TREE, alive
from tests.helpers.server import execute_request, wait_until_up

TOKEN = uuid.uuid4().hex


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, enabled: bool, tab_close_grace: float, root: str, extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        args = [
            sys.executable,
            "-m",
            "jupyter_server",
            "--no-browser",
            "--allow-root",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            "--ServerApp.ip=127.0.0.1",
            f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={root}",
            f"--JupyterCancel.tab_close_grace={tab_close_grace}",
            f"--ServerApp.jpserver_extensions=jupyter_cancel={enabled}",
            *extra,
        ]
        # Disabled: its kernels do not load the extension either (the environment-wide autoload).
        env = dict(os.environ) if enabled else dict(os.environ, JUPYTER_CANCEL_KERNEL_EXTENSION="0")
        self.proc = subprocess.Popen(
            args + ["--JupyterCancel.log_level=DEBUG"] if os.environ.get("BENCH_DEBUG") else args,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=None if os.environ.get("BENCH_DEBUG") else subprocess.DEVNULL,
        )
        self.http = httpx.Client(base_url=self.base, headers={"Authorization": f"token {TOKEN}"}, timeout=60)
        wait_until_up(self.http, self.proc, 60)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.send_signal(signal.SIGINT)  # twice skips the confirmation
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # ours, by pid
            self.proc.wait()
        self.http.close()


class Client:
    def __init__(self, server: Server, kernel_id: str) -> None:
        self.server, self.kernel_id, self.session = server, kernel_id, str(uuid.uuid4())
        self.ws = None

    async def connect(self) -> None:
        url = f"ws://127.0.0.1:{self.server.port}/api/kernels/{self.kernel_id}/channels?session_id={self.session}"
        self.ws = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {TOKEN}"}))

    def send(self, code: str, cell: str) -> str:
        msg = execute_request(code, cell, self.session)
        self.ws.write_message(json.dumps(msg))
        msg_id = msg["header"]["msg_id"]
        return msg_id

    async def execute(self, code: str, cell: str) -> dict:
        msg_id = self.send(code, cell)
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.read_message(), 60))
            if (msg["parent_header"] or {}).get("msg_id") == msg_id and msg["msg_type"] == "execute_reply":
                return msg["content"]

    async def tree(self, cell: str, ready: Path, stock: bool) -> list[int]:
        launch = (
            f"subprocess.Popen([sys.executable, {TREE!r}, 'three', {str(ready)!r}])"
            if stock
            else f"jc.start([sys.executable, {TREE!r}, 'three', {str(ready)!r}], display=False)"
        )
        prefix = "" if stock else "import jupyter_cancel as jc\n"
        reply = await self.execute(f"{prefix}import sys, subprocess\n_p = {launch}", cell)
        assert reply["status"] == "ok", reply
        deadline = time.monotonic() + 30
        while True:
            try:
                pids = [int(x) for x in ready.read_text().split()]
            except FileNotFoundError:
                pids = []
            if len(pids) >= 3:
                return pids
            if time.monotonic() > deadline:
                raise TimeoutError(str(ready))
            await asyncio.sleep(0.01)


async def gone_after(pids, trigger, timeout=30.0):
    fds = [os.pidfd_open(p) for p in pids]
    loop = asyncio.get_running_loop()
    t = time.perf_counter()
    action = asyncio.ensure_future(trigger())  # e.g. DELETE returns only once the kernel exited
    try:

        def wait():
            for fd in fds:
                left = t + timeout - time.perf_counter()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    return None
            return (time.perf_counter() - t) * 1000

        return await loop.run_in_executor(None, wait)
    finally:
        await action
        for fd in fds:
            os.close(fd)


def survivors(pids) -> int:
    left = [p for p in pids if alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    return len(left)


async def scenarios(server: Server, tmp: Path, n: int, stock: bool, grace_runs: int) -> dict[str, list]:
    results: dict[str, list] = {}
    count = [0]

    run_dir = Path(tempfile.mkdtemp(dir=tmp))  # ready files of one run only

    def ready() -> Path:
        count[0] += 1
        return run_dir / f"r{count[0]}"

    def new_kernel() -> str:
        return server.http.post("/api/kernels", json={"name": "python3"}).json()["id"]

    async def client_for(kid):
        c = Client(server, kid)
        await c.connect()
        if not stock:
            for _ in range(100):  # the server loads the extension into new kernels
                r = await c.execute(
                    "import sys; print('jupyter_cancel.kernel.extension' in sys.modules)", "probe"
                )
                if r["status"] == "ok":
                    break
        return c

    async def measure(label, runs, setup, trigger):
        out = []
        for _ in range(runs):
            pids, ctx = await setup()
            lat = await gone_after(pids, lambda: trigger(ctx), timeout=3 if stock else 60)
            out.append(lat if not stock else survivors(pids))
        results[label] = out

    kid = new_kernel()
    c = await client_for(kid)

    async def bg():
        return await c.tree("bg", ready(), stock), None

    async def post(path):
        await asyncio.get_running_loop().run_in_executor(None, lambda: server.http.post(path, json={}))

    await measure("REST interrupt", n, bg, lambda _: post(f"/api/kernels/{kid}/interrupt"))

    async def one():
        pids = await c.tree("one", ready(), stock)
        ops = server.http.get("/jupyter-cancel/api/operations").json()["operations"] if not stock else []
        live = [o["id"] for o in ops if o["state"] == "running"]
        return pids, live[-1] if live else None

    if not stock:
        await measure(
            "REST cancel of one operation",
            n,
            one,
            lambda op_id: post(f"/jupyter-cancel/api/operations/{op_id}/cancel"),
        )

    async def rerun_setup():
        return await c.tree("same", ready(), stock), None

    async def rerun(_):
        c.send("pass", "same")

    await measure("cell re-run", n, rerun_setup, rerun)
    await c.execute("pass", "sync")

    async def restart(_):
        await post(f"/api/kernels/{kid}/restart")

    async def restart_setup():
        nonlocal c
        c = await client_for(kid)
        return await c.tree("r", ready(), stock), None

    await measure("REST restart", max(3, n // 4), restart_setup, restart)

    async def tab(ctx):
        ctx.ws.close()

    async def tab_setup():
        k = new_kernel()
        cl = await client_for(k)
        return await cl.tree("t", ready(), stock), cl

    await measure(f"tab close (grace {server_grace[0]:g} s)", grace_runs, tab_setup, tab)

    async def shutdown_setup():
        k = new_kernel()
        cl = await client_for(k)
        return await cl.tree("s", ready(), stock), k

    async def shutdown(k):
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: server.http.delete(f"/api/kernels/{k}")
        )

    await measure("REST shutdown (DELETE)", max(3, n // 4), shutdown_setup, shutdown)
    for k in server.http.get("/api/kernels").json():
        server.http.delete(f"/api/kernels/{k['id']}")
    return results


server_grace = [0.0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--default-grace-runs", type=int, default=3)
    n = parser.parse_args().n
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    print(f"# {os.uname().nodename} {os.cpu_count()} cores; n={n}")
    for grace, runs in ((0.0, n), (15.0, args.default_grace_runs)):
        server_grace[0] = grace
        server = Server(True, grace, str(tmp))
        try:
            res = asyncio.run(scenarios(server, tmp, n if grace == 0 else 1, False, runs))
        finally:
            server.stop()
        for label, lat in res.items():
            if grace and "tab close" not in label:
                continue
            if None in lat:
                print(f"with extension | {label}: {lat.count(None)} of {len(lat)} runs left processes")
                lat = [x for x in lat if x is not None]
            if lat:
                print(
                    f"with extension | {label}: p50 {pct(lat, 50):.1f} ms  p99 {pct(lat, 99):.1f} ms  (n={len(lat)})"
                )
    server_grace[0] = 0.0
    server = Server(False, 0.0, str(tmp))
    try:
        res = asyncio.run(scenarios(server, tmp, 3, True, 3))
    finally:
        server.stop()
    for label, left in res.items():
        print(f"extension disabled | {label}: processes of 3 alive 3 s later: {left}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.helpers.home import private_jupyter_home

    private_jupyter_home("jupyter-cancel-bench-", remove_at_exit=True)  # never the user's home
    main()
