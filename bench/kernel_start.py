"""What a kernel pays for jupyter_cancel at start (not a test): two `jupyter server`
subprocesses, one with the extension (it loads the kernel extension into every kernel it
starts) and one without, used in turn.

    .venv/bin/python bench/kernel_start.py [--n 8]

* start → first execute reply: ``POST api/kernels``, websocket, ``execute_request("1")``;
* RSS at rest of the kernel and every process under it (the watchdog included), 1 s after;
* first captured spawn (``subprocess.run(["true"])``) vs a later one, in the kernel;
* the extra import time of ``%load_ext jupyter_cancel`` (``python -X importtime``, summed
  over the modules the extension adds to an ipykernel's own imports).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_server import Client, Server, pct


def tree_rss(pid: int) -> int:
    proc = psutil.Process(pid)
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


async def one_round(server: Server) -> tuple[float, int, float, float]:
    t0 = time.perf_counter()
    kernel_id = server.http.post("/api/kernels", json={"name": "python3"}).json()["id"]
    client = Client(server, kernel_id)
    await client.connect()
    reply = await client.execute("1", "c1")
    started = (time.perf_counter() - t0) * 1000
    assert reply["status"] == "ok", reply
    spawn = (
        "import subprocess, time\nt = time.perf_counter(); subprocess.run(['true'])\n"
        "first = time.perf_counter() - t\nt = time.perf_counter(); subprocess.run(['true'])\n"
        "later = time.perf_counter() - t\nprint(first * 1000, later * 1000)"
    )
    first_ms = later_ms = 0.0
    msg_id = client.send(spawn, "c2")
    out = ""
    while True:
        import json

        msg = json.loads(await asyncio.wait_for(client.ws.read_message(), 60))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            out += msg["content"]["text"]
        if msg["msg_type"] == "error":
            raise RuntimeError(f"{msg['content']['ename']}: {msg['content']['evalue']}")
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break  # iopub is ordered: the output came before (the shell reply may come later)
    first_ms, later_ms = (float(x) for x in out.split())
    await asyncio.sleep(1.0)  # at rest
    kernel_pid = next(
        p.pid for p in psutil.Process(server.proc.pid).children() if kernel_id in " ".join(p.cmdline())
    )
    rss = tree_rss(kernel_pid)
    client.ws.close()
    server.http.delete(f"/api/kernels/{kernel_id}")
    return started, rss, first_ms, later_ms


def import_ms() -> float:
    """ms of imports the extension adds to ipykernel's own (self times, -X importtime)."""

    def modules(code: str) -> dict[str, int]:
        err = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True
        ).stderr
        out = {}
        for line in err.splitlines():
            if line.startswith("import time:") and "self [us]" not in line:
                parts = line.split("|")
                out[parts[2].strip()] = int(parts[0].split(":")[1])
        return out

    base = modules("import ipykernel.ipkernel, IPython")
    ext = modules("import ipykernel.ipkernel, IPython, jupyter_cancel.kernel.extension")
    return sum(us for name, us in ext.items() if name not in base) / 1000


def as_installed() -> None:
    """Measure what a pip install gives: bytecode compiled (pip does it at install; an editable
    install under ``PYTHONDONTWRITEBYTECODE=1``, as on this machine, recompiles at every start)."""
    import compileall
    import os

    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    compileall.compile_dir(str(Path(__file__).resolve().parents[1] / "jupyter_cancel"), quiet=1)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=8)
    n = parser.parse_args().n
    as_installed()
    root = tempfile.mkdtemp()
    servers = {"with jupyter_cancel": Server(True, 15.0, root), "without": Server(False, 15.0, root)}
    results: dict[str, list[tuple[float, int, float, float]]] = {k: [] for k in servers}
    try:
        for _ in range(n):
            for label, server in servers.items():
                results[label].append(await one_round(server))
    finally:
        for server in servers.values():
            server.stop()
    for label, rows in results.items():
        start = [r[0] for r in rows]
        rss = [r[1] / 2**20 for r in rows]
        first = [r[2] for r in rows]
        later = [r[3] for r in rows]
        print(
            f"{label}: start → first reply p50 {pct(start, 50):.0f} ms (min {min(start):.0f}); "
            f"RSS at rest p50 {pct(rss, 50):.1f} MiB; first spawn p50 {pct(first, 50):.2f} ms, "
            f"later {pct(later, 50):.2f} ms (n={len(rows)})"
        )
    imports = sorted(import_ms() for _ in range(11))
    print(f"extra import time of the kernel extension: median {imports[5]:.1f} ms (11 runs)")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.helpers.home import private_jupyter_home

    private_jupyter_home("jupyter-cancel-bench-", remove_at_exit=True)  # never the user's home
    asyncio.run(main())
