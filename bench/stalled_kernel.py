"""DELETE of a SIGSTOPped kernel (not a test): how long the request takes and whether its
work is gone, with the extension and with it disabled, through a `jupyter server` subprocess.

    .venv/bin/python bench/stalled_kernel.py [--n 5]

The bound documented in docs/REFERENCE.md: control_timeout (1 s) + the work's grace + the kill.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_server import Client, Server, pct, survivors

from tests.helpers.procs import announced


async def one(server: Server, tmp: Path, i: int, stock: bool, listed: bool = True) -> tuple[float, int]:
    kid = server.http.post("/api/kernels", json={"name": "python3"}).json()["id"]
    c = Client(server, kid)
    await c.connect()
    ready = tmp / f"r{i}-{stock}"
    pids = await c.tree("t", ready, stock)
    if not stock and listed:
        server.http.get("/jupyter-cancel/api/operations")  # the server asked the kernel once
    r = await c.execute("import os; print(os.getpid())", "pid")
    assert r["status"] == "ok"
    kernel = next(
        p for p in psutil.Process(server.proc.pid).children() if "ipykernel" in " ".join(p.cmdline())
    )
    kernel.send_signal(signal.SIGSTOP)
    started = time.perf_counter()
    server.http.delete(f"/api/kernels/{kid}")
    took = time.perf_counter() - started
    c.ws.close()
    return took, survivors(pids + announced(ready))


async def main_async(n: int) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for stock, listed in ((False, True), (False, False), (True, False)):
            server = Server(enabled=not stock, tab_close_grace=15.0, root=tmp)
            try:
                runs = [await one(server, Path(tmp), i, stock, listed) for i in range(n)]
            finally:
                server.stop()
            label = (
                "extension disabled (stock)"
                if stock
                else "jupyter_cancel" + ("" if listed else ", never asked anything before")
            )
            times = [t for t, _ in runs]
            out[label] = {
                "delete_s_p50": round(pct(times, 50), 2),
                "delete_s_max": round(max(times), 2),
                "survivors": [s for _, s in runs],
            }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5)
    print(json.dumps(asyncio.run(main_async(ap.parse_args().n)), indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.helpers.home import private_jupyter_home

    private_jupyter_home("jupyter-cancel-bench-", remove_at_exit=True)  # never the user's home
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
