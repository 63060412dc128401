"""Kernels in other languages (not a test): IRkernel, bash_kernel, xeus-python through two
`jupyter server` subprocesses, one with jupyter_cancel and one without (stock), used in turn.

    .venv/bin/python bench/foreign_kernels.py [--n 5] [--kernels ir,bash,xpython]

Each round starts a kernel, has it start (its language's usual way) a tree with a ``setsid``
member and a double-fork daemon — 5 processes, all honouring SIGTERM — then one trigger:

* restart (``POST api/kernels/<id>/restart``) and shutdown (``DELETE``): request → every
  process of the tree gone (pidfds), survivors after 3 s;
* kernel SIGKILL: the signal → every process gone, survivors after 3 s;
* start: ``POST api/kernels`` → first execute reply (what marking the kernel costs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_server import Client, Server, gone_after, pct, survivors
from tests.helpers.foreign import MEMBERS, STARTS, STILL_WORKS, installed, use_test_kernels
from tests.helpers.procs import TREE

WAIT = 3.0


def kernel_pid(server: Server, kernel_id: str) -> int:
    return next(
        p.pid for p in psutil.Process(server.proc.pid).children() if kernel_id in " ".join(p.cmdline())
    )


async def ready_pids(ready: Path, count: int, timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            pids = [int(x) for x in ready.read_text().split()]
        except FileNotFoundError:
            pids = []
        if len(pids) >= count:
            return pids
        if time.monotonic() > deadline:
            raise TimeoutError(str(ready))
        await asyncio.sleep(0.01)


async def start(server: Server, name: str) -> tuple[str, Client, float]:
    kernel_id, client, ms, _ = await timed_start(server, name)
    return kernel_id, client, ms


async def timed_start(server: Server, name: str) -> tuple[str, Client, float, float]:
    """A started kernel and its client; ms to the first reply and ms the POST took."""
    t0 = time.perf_counter()
    kernel_id = server.http.post("/api/kernels", json={"name": name}).json()["id"]
    post_ms = (time.perf_counter() - t0) * 1000
    client = Client(server, kernel_id)
    await client.connect()
    reply = await client.execute(STILL_WORKS[name], "c0")
    assert reply["status"] == "ok", reply
    return kernel_id, client, (time.perf_counter() - t0) * 1000, post_ms


async def one(server: Server, name: str, trigger: str, tmp: Path, n: int) -> tuple[float | None, int, float]:
    kernel_id, client, start_ms = await start(server, name)
    ready = tmp / f"{name}-{trigger}-{n}-{server.port}"
    reply = await client.execute(STARTS[name].format(py=sys.executable, tree=TREE, ready=ready), "c1")
    assert reply["status"] == "ok", reply
    pids = await ready_pids(ready, MEMBERS)
    http = server.http

    async def act() -> None:
        if trigger == "restart":
            await asyncio.to_thread(http.post, f"/api/kernels/{kernel_id}/restart")
        elif trigger == "shutdown":
            await asyncio.to_thread(http.delete, f"/api/kernels/{kernel_id}")
        else:
            os.kill(kernel_pid(server, kernel_id), signal.SIGKILL)

    ms = await gone_after(pids, act, timeout=WAIT)
    left = survivors(pids)
    client.ws.close()
    if trigger != "shutdown":
        await asyncio.to_thread(http.delete, f"/api/kernels/{kernel_id}")
    return ms, left, start_ms


async def starts_only(servers: dict[str, Server], kernels: list[str], n: int) -> None:
    """Start → first reply only, interleaved; each kernel shut down before the next start."""
    times: dict[tuple[str, str], list[float]] = {}
    posts: dict[tuple[str, str], list[float]] = {}
    for _ in range(n):
        for name in kernels:
            for label, server in servers.items():
                kernel_id, client, ms, post_ms = await timed_start(server, name)
                times.setdefault((name, label), []).append(ms)
                posts.setdefault((name, label), []).append(post_ms)
                client.ws.close()
                await asyncio.to_thread(server.http.delete, f"/api/kernels/{kernel_id}")
    compare_table(f"start → first reply, n={n} each, interleaved", kernels, times, digits=0)
    compare_table(
        "`POST api/kernels` alone (what the marking adds to the start itself; the rest is the kernel's boot)",
        kernels,
        posts,
        digits=1,
    )


def compare_table(
    title: str, kernels: list[str], rows: dict[tuple[str, str], list[float]], digits: int
) -> None:
    """One markdown table: per kernel, p50 (min) with jupyter_cancel and stock, and the difference."""
    print(f"\n{title}")
    print("| kernel | jupyter_cancel p50 (min) | stock p50 (min) | difference of p50 |")
    print("|---|---|---|---|")
    for name in kernels:
        ours, stock = rows[(name, "jupyter_cancel")], rows[(name, "stock")]
        print(
            f"| {name} | {pct(ours, 50):.{digits}f} ms ({min(ours):.{digits}f}) | "
            f"{pct(stock, 50):.{digits}f} ms ({min(stock):.{digits}f}) | {pct(ours, 50) - pct(stock, 50):+.{digits}f} ms |"
        )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5)
    parser.add_argument("--kernels", default=",".join(STARTS))
    parser.add_argument("--starts", type=int, default=0, help="only time N starts per kernel and server")
    args = parser.parse_args()
    use_test_kernels(Path(tempfile.mkdtemp()))  # the bash and xeus-python specs of .venv/test-kernels
    have = installed()
    kernels = [k for k in args.kernels.split(",") if k in have]
    print(f"kernels: {kernels} (not installed: {[k for k in STARTS if k not in have]})")
    root = tempfile.mkdtemp()
    tmp = Path(tempfile.mkdtemp())
    servers = {"jupyter_cancel": Server(True, 15.0, root), "stock": Server(False, 15.0, root)}
    rows: dict[tuple[str, str, str], list[tuple[float | None, int, float]]] = {}
    if args.starts:
        try:
            await starts_only(servers, kernels, args.starts)
        finally:
            for server in servers.values():
                server.stop()
        return
    try:
        for i in range(args.n):
            for name in kernels:
                for trigger in ("restart", "shutdown", "SIGKILL"):
                    for label, server in servers.items():
                        rows.setdefault((name, trigger, label), []).append(
                            await one(server, name, trigger, tmp, i)
                        )
    finally:
        for server in servers.values():
            server.stop()
    print(f"\nn={args.n} per cell; {MEMBERS} processes per tree; survivors counted {WAIT:.0f} s after")
    print("| kernel | trigger | jupyter_cancel: gone p50 / max | survivors | stock: survivors |")
    print("|---|---|---|---|---|")
    for name in kernels:
        for trigger in ("restart", "shutdown", "SIGKILL"):
            ours = rows[(name, trigger, "jupyter_cancel")]
            stock = rows[(name, trigger, "stock")]
            times = [r[0] for r in ours if r[0] is not None]
            gone = (
                f"{pct(times, 50):.1f} / {max(times):.1f} ms" if len(times) == len(ours) else "not all gone"
            )
            print(
                f"| {name} | {trigger} | {gone} | {sum(r[1] for r in ours)}/{MEMBERS * len(ours)} "
                f"| {sum(r[1] for r in stock)}/{MEMBERS * len(stock)} |"
            )
    print("\n| kernel | start → first reply p50, jupyter_cancel | stock | difference |")
    print("|---|---|---|---|")
    for name in kernels:
        ours = [r[2] for t in ("restart", "shutdown", "SIGKILL") for r in rows[(name, t, "jupyter_cancel")]]
        stock = [r[2] for t in ("restart", "shutdown", "SIGKILL") for r in rows[(name, t, "stock")]]
        print(
            f"| {name} | {pct(ours, 50):.0f} ms | {pct(stock, 50):.0f} ms | "
            f"{pct(ours, 50) - pct(stock, 50):+.0f} ms |"
        )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.helpers.home import private_jupyter_home

    private_jupyter_home("jupyter-cancel-bench-", remove_at_exit=True)  # never the user's home
    asyncio.run(main())
