"""Cancellation on a Dask cluster (not a test): two LocalClusters in processes of their own
(2 worker processes × 1 thread each, with nannies), one with the jupyter_cancel worker plugin
and one without (stock), used in turn.

    .venv/bin/python bench/dask_cancel.py [--n 20] [--tiny 1000]

Every task holds the same tree: a shell, a background job, a setsid member and a double-fork
daemon (tests/helpers/dask_tasks.py), all honouring SIGTERM. Figures:

* ``future.cancel()`` → every process of the task's tree gone (pidfds); stock: survivors after 3 s;
* notebook re-run (a real python3 kernel: ``execute_request`` of the same cell) → remote tree
  gone; stock: a kernel without the extension and a plain ``client.submit``;
* client SIGKILL (a client process of its own) → trees gone, and when the scheduler noticed;
* ``client.restart()`` with two running trees: its duration and survivors;
* 1000 tiny tasks (``client.map`` + ``gather``): plain tasks and tracked ones, beside stock.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distributed import Client  # noqa: E402

import jupyter_cancel as jc  # noqa: E402
from bench.bench_core import end, gone_or_end, pct  # noqa: E402
from tests.helpers.dask_tasks import MEMBERS, tree_task, value  # noqa: E402
from tests.helpers.kernel import Kernel  # noqa: E402
from tests.helpers.procs import left_alive, wait_ready  # noqa: E402
from tests.helpers.wait import until, until_file, wait_gone  # noqa: E402

CLUSTER = str(ROOT / "tests" / "helpers" / "dask_cluster.py")
CLIENT = str(ROOT / "tests" / "helpers" / "dask_client.py")
WAIT = 3.0
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


class Cluster:
    def __init__(self, folder: Path, plugin: bool) -> None:
        ready = folder / "scheduler"
        self.log = open(folder / "cluster.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, CLUSTER, str(ready)], stdin=subprocess.PIPE, stderr=self.log, env=ENV, cwd=ROOT
        )
        self.address = until_file(ready, lambda: ready.exists() and ready.read_text(), 60, "scheduler")
        self.client = Client(self.address, set_as_default=False)
        self.plugin = plugin
        if plugin:
            jc.dask.install(self.client)

    def submit(self, ready: Path):
        if self.plugin:
            return jc.dask.submit(self.client, tree_task, str(ready), pure=False)
        return self.client.submit(tree_task, str(ready), pure=False)

    def close(self) -> None:
        self.client.close()
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.log.close()


def gone_ms(pids: list[int], since: float, timeout: float) -> float | None:
    """Milliseconds from ``since`` until every pid exited; None if some survived ``timeout``."""
    return gone_or_end(pids, since, timeout)[1]


def report(name: str, ours: list[float | None], stock: list[float | None], goal: str) -> None:
    def cell(values: list[float | None]) -> str:
        done = [v for v in values if v is not None]
        survived = len(values) - len(done)
        timing = f"p50 {pct(done, 50):.1f} ms, max {max(done):.1f} ms" if done else "never"
        return f"{timing}; survivors {survived}/{len(values)} trees"

    print(f"| {name} | {cell(ours)} | {cell(stock)} | {goal} |", flush=True)


def bench_future_cancel(clusters: dict[str, Cluster], n: int, tmp: Path) -> None:
    out: dict[str, list[float | None]] = {"jc": [], "stock": []}
    for i in range(n):
        for label, cluster in clusters.items():
            ready = tmp / f"fc-{label}-{i}"
            future = cluster.submit(ready)
            pids = wait_ready(ready, MEMBERS, timeout=30)
            t0 = time.perf_counter()
            future.cancel()
            out[label].append(gone_ms(pids, t0, WAIT))
            until(lambda c=cluster: not any(c.client.processing().values()), 30, "worker free")
    report("`future.cancel()` → task's tree gone", out["jc"], out["stock"], "p50 ≤ 50 ms")


def bench_rerun(clusters: dict[str, Cluster], n: int, tmp: Path) -> None:
    out: dict[str, list[float | None]] = {"jc": [], "stock": []}
    kernels = {"jc": Kernel(), "stock": Kernel(load_ext=False)}
    try:
        for label, k in kernels.items():
            submit = (
                "jc.dask.submit(client, tree_task, r, pure=False)"
                if label == "jc"
                else "client.submit(tree_task, r, pure=False)"
            )
            assert k.execute(
                f"from distributed import Client\nfrom tests.helpers.dask_tasks import tree_task\n"
                f"client = Client({clusters[label].address!r}, set_as_default=False)\n"
                f"def go(r):\n    global future\n    future = {submit}",
                cell="setup-dask",
            ).ok
        for i in range(n):
            for label, k in kernels.items():
                ready = tmp / f"rr-{label}-{i}"
                assert k.execute(f"go({str(ready)!r})", cell="the-cell").ok
                pids = wait_ready(ready, MEMBERS, timeout=30)
                t0 = time.perf_counter()
                msg = k.send(f"go({str(tmp / f'rr2-{label}-{i}')!r})", cell="the-cell")
                out[label].append(gone_ms(pids, t0, WAIT))
                assert k.collect(msg).ok
                new = wait_ready(tmp / f"rr2-{label}-{i}", MEMBERS, timeout=30)
                k.execute("client.cancel([future], force=True)", cell="cleanup")
                if label == "stock":
                    end(left_alive(new))
                wait_gone(new, timeout=10)
                until(lambda c=clusters[label]: not any(c.client.processing().values()), 30, "worker free")
    finally:
        for k in kernels.values():
            k.execute("client.close()", cell="bye")
            k.close()
    report("notebook re-run → remote tree gone (real kernel)", out["jc"], out["stock"], "p50 ≤ 100 ms")


def bench_client_kill(clusters: dict[str, Cluster], n: int, tmp: Path) -> None:
    out: dict[str, list[float | None]] = {"jc": [], "stock": []}
    noticed: list[float] = []
    for i in range(n):
        for label, cluster in clusters.items():
            ready = tmp / f"ck-{label}-{i}"
            before = set(cluster.client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.clients)))
            proc = subprocess.Popen(
                [
                    sys.executable,
                    CLIENT,
                    cluster.address,
                    str(ready),
                    "cancel" if label == "jc" else "stock",
                    str(tmp / f"key-{label}-{i}"),
                ],
                stdin=subprocess.PIPE,
                env=ENV,
                cwd=ROOT,
            )
            pids = wait_ready(ready, MEMBERS, timeout=60)
            t0 = time.perf_counter()
            proc.kill()
            proc.wait()
            assert proc.stdin is not None
            proc.stdin.close()
            out[label].append(gone_ms(pids, t0, WAIT))
            if label == "jc":
                until(
                    lambda: (
                        set(
                            cluster.client.run_on_scheduler(
                                lambda dask_scheduler: list(dask_scheduler.clients)
                            )
                        )
                        == before
                    ),
                    30,
                    "client dropped",
                )
                noticed.append((time.perf_counter() - t0) * 1000)
            until(lambda c=cluster: not any(c.client.processing().values()), 30, "worker free")
    report("client SIGKILL → trees gone", out["jc"], out["stock"], "≤ 100 ms after the scheduler notices")
    print(
        f"  (the scheduler had dropped the client {pct(noticed, 50):.0f} ms p50 after the kill, looked at once the trees were gone)"
    )


def bench_restart(clusters: dict[str, Cluster], n: int, tmp: Path) -> None:
    for label, cluster in clusters.items():
        took, survived = [], 0
        for i in range(n):
            readies = [tmp / f"rs-{label}-{i}-{j}" for j in range(2)]
            for r in readies:
                cluster.submit(r)
            pids = [p for r in readies for p in wait_ready(r, MEMBERS, timeout=30)]
            t0 = time.perf_counter()
            cluster.client.restart()
            took.append(time.perf_counter() - t0)
            left = wait_gone(pids, timeout=WAIT)
            survived += len(left)
            end(left)
            wait_gone(left)
            if cluster.plugin:
                jc.dask.install(cluster.client)
        warned = "still alive" in Path(cluster.log.name).read_text(errors="replace")
        print(
            f"| `client.restart()` with 2 running trees, {label} | {pct(took, 50):.2f} s p50, max {max(took):.2f} s | "
            f"survivors {survived}/{n * 2 * MEMBERS} processes | nanny 'still alive … killing' warning: {'yes' if warned else 'no'} |",
            flush=True,
        )


def bench_tiny(clusters: dict[str, Cluster], n: int, rounds: int) -> None:
    times: dict[str, list[float]] = {"stock": [], "jc plain": [], "jc tracked": []}
    for r in range(rounds):
        for label in times:
            cluster = clusters["stock" if label == "stock" else "jc"]
            c = cluster.client
            t0 = time.perf_counter()
            if label == "jc tracked":
                with jc.dask.tracked(c, "tiny"):
                    futures = c.map(value, range(n), key=[f"t{r}-{label}-{i}" for i in range(n)])
            else:
                futures = c.map(value, range(n), key=[f"t{r}-{label}-{i}" for i in range(n)])
            assert sum(c.gather(futures)) == n * (n - 1) // 2
            times[label].append(time.perf_counter() - t0)
            del futures
    base = pct(times["stock"], 50)
    for label, values in times.items():
        print(
            f"| {n} tiny tasks, {label} | {pct(values, 50) * 1000:.0f} ms p50 | {100 * (pct(values, 50) / base - 1):+.1f} % over stock |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--tiny", type=int, default=1000)
    parser.add_argument("--only", default="cancel,rerun,kill,restart,tiny")
    args = parser.parse_args()
    only = args.only.split(",")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "jc").mkdir()
        (tmp / "stock").mkdir()
        clusters = {"jc": Cluster(tmp / "jc", True), "stock": Cluster(tmp / "stock", False)}
        try:
            print("| figure | jupyter_cancel | stock Dask | goal |\n|---|---|---|---|")
            if "cancel" in only:
                bench_future_cancel(clusters, args.n, tmp)
            if "rerun" in only:
                bench_rerun(clusters, max(3, args.n // 2), tmp)
            if "kill" in only:
                bench_client_kill(clusters, max(3, args.n // 4), tmp)
            if "restart" in only:
                bench_restart(clusters, 3, tmp)
            if "tiny" in only:
                bench_tiny(clusters, args.tiny, 7)
        finally:
            for cluster in clusters.values():
                cluster.close()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.helpers.home import private_jupyter_home

    private_jupyter_home("jupyter-cancel-bench-", remove_at_exit=True)  # never the user's home
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
