"""Soak (not a test): mixed re-runs, stops, restarts and tab closes from 3 clients against a
`jupyter server` subprocess for a while; fds, threads and RSS of the server and the kernel
sampled over time, with their slopes, plotted to docs/soak.png.

    .venv/bin/python bench/soak.py [--minutes 30] [--out bench/results/soak.json]

Every trigger's tree is checked gone (survivors counted); the run ends with no process left.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_server import Client, Server

from tests.helpers.procs import left_alive


def kernel_of(server: Server) -> psutil.Process | None:
    for child in psutil.Process(server.proc.pid).children():
        try:
            if "ipykernel" in " ".join(child.cmdline()):
                return child
        except psutil.Error:
            continue
    return None


def sample(proc: psutil.Process | None) -> dict[str, float] | None:
    if proc is None:
        return None
    try:
        with proc.oneshot():
            return {
                "rss_mb": proc.memory_info().rss / 2**20,
                "fds": proc.num_fds(),
                "threads": proc.num_threads(),
            }
    except psutil.Error:
        return None


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per hour."""
    if len(points) < 3:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    return 0.0 if var == 0 else 3600 * sum((t - mx) * (v - my) for t, v in points) / var


async def soak(minutes: float, seed: int, stock: bool = False) -> dict:
    rng = random.Random(seed)
    root = Path(tempfile.mkdtemp(prefix="soak-"))
    server = Server(enabled=not stock, tab_close_grace=0.0, root=str(root))
    lost: list[dict] = []
    counts = {"rerun": 0, "stop": 0, "restart": 0, "tab_close": 0}
    survivors = {"rerun": 0, "stop": 0, "restart": 0, "tab_close": 0}
    samples: list[dict] = []
    try:
        kid = server.http.post("/api/kernels", json={"name": "python3"}).json()["id"]
        clients = [Client(server, kid) for _ in range(3)]
        for c in clients:
            await c.connect()
        live: dict[int, list[int]] = {}  # client index → pids of its current tree
        n = 0
        start = time.monotonic()
        next_sample = start
        kernel_epoch = 0
        while time.monotonic() - start < minutes * 60:
            now = time.monotonic()
            if now >= next_sample:
                samples.append(
                    {
                        "t": now - start,
                        "epoch": kernel_epoch,
                        "server": sample(psutil.Process(server.proc.pid)),
                        "kernel": sample(kernel_of(server)),
                    }
                )
                next_sample += 5.0
            i = rng.randrange(3)
            action = rng.choices(["rerun", "stop", "restart", "tab_close"], weights=[10, 4, 1, 3])[0]
            n += 1
            before = live.pop(i, []) if action != "restart" else [p for v in live.values() for p in v]
            if action == "restart":
                live.clear()
                server.http.post(f"/api/kernels/{kid}/restart")
                kernel_epoch += 1
            elif action == "stop":
                server.http.post(f"/jupyter-cancel/api/kernels/{kid}/cancel", json={"cell_id": f"c{i}"})
            elif action == "tab_close":
                clients[i].ws.close()
                clients[i] = Client(server, kid)
                await clients[i].connect()
            if action == "rerun" or rng.random() < 0.5:
                live[i] = await clients[i].tree(f"c{i}", root / f"ready-{n}", stock=stock)
            deadline = time.monotonic() + (0 if stock else 10)  # stock: nothing will end them
            while left_alive(before) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            left = left_alive(before)
            survivors[action] += len(left)
            if left and len(lost) < 20:
                ops = (
                    server.http.get("/jupyter-cancel/api/operations").json().get("operations", [])
                    if not stock
                    else []
                )
                lost.append(
                    {
                        "n": n,
                        "action": action,
                        "client": i,
                        "pids": left,
                        "ops": [o for o in ops if set(o.get("pids") or []) & set(left)],
                    }
                )
            for pid in left:  # ours, by pid: the next action starts clean
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            counts[action] += 1
        server.http.delete(f"/api/kernels/{kid}")
        for c in clients:
            c.ws.close()
    finally:
        server.stop()
    return {
        "minutes": minutes,
        "stock": stock,
        "actions": counts,
        "survivors": survivors,
        "lost": lost,
        "samples": samples,
    }


def summarise(result: dict) -> dict:
    out = {}
    for who in ("server", "kernel"):
        rows = [s for s in result["samples"] if s[who]]
        if who == "kernel" and rows:
            # Each restart starts a new kernel: take the longest restart-free stretch.
            epochs: dict[int, list] = {}
            for s in rows:
                epochs.setdefault(s["epoch"], []).append(s)
            rows = max(epochs.values(), key=len)
        for key in ("rss_mb", "fds", "threads"):
            pts = [(s["t"], s[who][key]) for s in rows]
            out[f"{who}_{key}_slope_per_h"] = round(slope_per_hour(pts), 3)
            out[f"{who}_{key}_first_last"] = [pts[0][1], pts[-1][1]] if pts else None
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    for ax, key, label in zip(
        axes, ("rss_mb", "fds", "threads"), ("RSS (MiB)", "open fds", "threads"), strict=True
    ):
        for who in ("server", "kernel"):
            pts = [(s["t"] / 60, s[who][key]) for s in result["samples"] if s[who]]
            ax.plot([t for t, _ in pts], [v for _, v in pts], label=who, marker=".", linewidth=1)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[-1].set_xlabel("minutes (kernel restarts reset its series)")
    fig.suptitle(f"soak: {sum(result['actions'].values())} actions in {result['minutes']} min, 3 clients")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="bench/results/soak.json")
    ap.add_argument("--png", default="docs/soak.png")
    ap.add_argument("--stock", action="store_true", help="extension disabled, trees started with Popen")
    args = ap.parse_args()
    result = asyncio.run(soak(args.minutes, args.seed, args.stock))
    result["summary"] = summarise(result)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    plot(result, Path(args.png))
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.helpers.home import private_jupyter_home

    private_jupyter_home("jupyter-cancel-bench-", remove_at_exit=True)  # never the user's home
    main()
