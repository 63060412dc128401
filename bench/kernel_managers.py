"""Kernel start under each kind of kernel manager (not a test): a `jupyter server`
subprocess with jupyter_cancel enabled and with it disabled, side by side in one run.

    .venv/bin/python bench/kernel_managers.py [--n 8]

Per start: ``POST /api/kernels`` answered, and the first ``execute_reply`` of a cell sent on
the kernel's websocket right after (a pending kernel's POST answers before it is up).
Kinds: the synchronous ``MappingKernelManager`` (deprecated, still supported), the default
``AsyncMappingKernelManager``, and the async one with ``use_pending_kernels``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_server import Client, Server, pct

KINDS = {
    "sync MappingKernelManager": (
        "--ServerApp.kernel_manager_class=jupyter_server.services.kernels.kernelmanager.MappingKernelManager",
    ),
    "AsyncMappingKernelManager": (),
    "pending kernels": ("--AsyncMappingKernelManager.use_pending_kernels=True",),
}


async def one(server: Server) -> tuple[float, float]:
    started = time.perf_counter()
    kid = server.http.post("/api/kernels", json={"name": "python3"}).json()["id"]
    posted = time.perf_counter() - started
    c = Client(server, kid)
    await c.connect()
    reply = await c.execute("pass", "first")
    first = time.perf_counter() - started
    assert reply["status"] == "ok", reply
    c.ws.close()
    server.http.delete(f"/api/kernels/{kid}")
    return posted, first


async def main_async(n: int) -> dict:
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, extra in KINDS.items():
            row: dict = {}
            for enabled in (False, True):
                server = Server(enabled=enabled, tab_close_grace=15.0, root=tmp, extra=extra)
                try:
                    await one(server)  # warm-up (imports, caches)
                    runs = [await one(server) for _ in range(n)]
                finally:
                    server.stop()
                label = "jupyter_cancel" if enabled else "stock"
                row[label] = {
                    "POST answered ms p50": round(pct([p for p, _ in runs], 50) * 1000, 1),
                    "first reply ms p50": round(pct([f for _, f in runs], 50) * 1000, 1),
                }
            row["first reply delta ms"] = round(
                row["jupyter_cancel"]["first reply ms p50"] - row["stock"]["first reply ms p50"], 1
            )
            out[kind] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8)
    print(json.dumps(asyncio.run(main_async(ap.parse_args().n)), indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.helpers.home import private_jupyter_home

    private_jupyter_home("jupyter-cancel-bench-", remove_at_exit=True)  # never the user's home
    main()
