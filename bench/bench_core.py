"""Core benchmarks (not tests): cancel latency, launch overhead, throughput, scale, idle CPU, watchdog.

    .venv/bin/python bench/bench_core.py [--quick]

Prints one line per figure; docs/BENCHMARKS.md records a run with the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jupyter_cancel as jc
from jupyter_cancel.core import Registry
from jupyter_cancel.core.cgroup import Cgroup
from tests.helpers.procs import alive, tree_cmd, wait_ready


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def end(pids: list[int]) -> None:
    """SIGKILL what a stock run left of our own trees (pids we just saw start)."""
    for pid in pids:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            continue


def gone_or_end(pids: list[int], since: float, timeout: float) -> tuple[list[int], float | None]:
    """Wait up to ``timeout`` for every pid to exit: the survivors (then SIGKILLed and waited
    for) and the milliseconds from ``since`` until all were gone (None if some survived)."""
    from tests.helpers.wait import wait_gone

    left = wait_gone(pids, timeout=timeout)
    took = None if left else (time.perf_counter() - since) * 1000
    end(left)
    wait_gone(left)
    return left, took


def gone_all(pids: list[int]) -> None:
    for pid in pids:
        assert not alive(pid), f"pid {pid} survived"  # alive() counts a zombie as gone


def bench_cancel(n: int) -> None:
    lat = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(n):
            ready = Path(d) / f"r{i}"
            op = jc.start(tree_cmd("three", ready), display=False)
            pids = wait_ready(ready, 3)
            t = time.perf_counter()
            op.cancel()
            lat.append((time.perf_counter() - t) * 1000)
            gone_all(pids)
    print(
        f"cancel -> 3-process tree (setsid grandchild) gone: p50 {pct(lat, 50):.2f} ms  p99 {pct(lat, 99):.2f} ms  (n={n})"
    )


def bench_launch(n: int) -> None:
    bare, ours = [], []
    for _ in range(n):
        t = time.perf_counter()
        p = subprocess.Popen(
            ["sleep", "30"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        bare.append((time.perf_counter() - t) * 1000)
        p.kill()
        p.wait()
        p.stdout.close()
        t = time.perf_counter()
        op = jc.start(["sleep", "30"], display=False)
        ours.append((time.perf_counter() - t) * 1000)
        op.cancel()
    b, o = statistics.median(bare), statistics.median(ours)
    print(
        f"launch: Popen p50 {b:.2f} ms, jc.start p50 {o:.2f} ms, overhead +{o - b:.2f} ms  (n={n}, cgroup={Cgroup.available()})"
    )


def bench_throughput(n: int, rounds: int = 1) -> None:
    reg = Registry(watchdog=False)
    rates = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(n):
            op = reg.new(name="x", kind="scope")
            reg.register(op)
            reg.finish(op, jc.State.COMPLETED)
        rates.append(n / (time.perf_counter() - t))
    print(
        f"registry register+complete, one thread: {statistics.median(rates) / 1000:.0f}k/s  "
        f"(median of {rounds} × n={n})"
    )


def bench_cancel_all(n: int) -> None:
    ops = [jc.start(["sleep", "60"], display=False) for _ in range(n)]
    pids = [p for op in ops for p in op.pids()]
    t = time.perf_counter()
    cancelled = jc.cancel_all()
    took = time.perf_counter() - t
    assert len(cancelled) == n
    gone_all(pids)
    print(f"cancel-all of {n} live process operations: {took * 1000:.0f} ms")


def bench_idle_cpu(n: int, seconds: float) -> None:
    ops = [jc.start(["sleep", "600"], display=False) for _ in range(n)]
    time.sleep(1.0)  # let start-up settle
    me = psutil.Process()
    c0, t0 = me.cpu_times(), time.perf_counter()
    time.sleep(seconds)
    c1, t1 = me.cpu_times(), time.perf_counter()
    used = (c1.user - c0.user + c1.system - c0.system) / (t1 - t0) * 100
    jc.cancel_all()
    print(
        f"owner CPU with {n} operations running, nothing happening: {used:.3f} % of a core over {seconds:.0f} s"
    )
    del ops


def bench_watchdog(n: int) -> None:
    lat = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(n):
            ready = Path(d) / f"w{i}"
            code = textwrap.dedent(
                f"""
                import jupyter_cancel as jc, signal
                jc.start({tree_cmd("three", ready)!r}, display=False)
                registry = jc.core.default_registry()
                registry.start_watchdog(wait=30)  # a kernel starts its watchdog when the extension loads
                print(registry.watchdog_health()["pid"], flush=True)
                signal.pause()
                """
            )
            owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
            wd = psutil.Process(int(owner.stdout.readline()))
            pids = wait_ready(ready, 3)
            fds = [os.pidfd_open(p) for p in pids]
            t = time.perf_counter()
            os.kill(owner.pid, signal.SIGKILL)
            # A pidfd turns readable when its process exits (init reaps orphans on its own time).
            for fd in fds:
                select.select([fd], [], [], 5)
                os.close(fd)
            lat.append((time.perf_counter() - t) * 1000)
            owner.wait()
            owner.stdout.close()
            wd.wait(5)
            gone_all(pids)
    print(
        f"owner SIGKILL -> its trees gone (watchdog): p50 {pct(lat, 50):.1f} ms  p99 {pct(lat, 99):.1f} ms  (n={n})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    q = args.quick
    print(
        f"# {platform.node()} {platform.platform()} {os.cpu_count()} cores python {platform.python_version()}"
    )
    bench_cancel(20 if q else 200)
    bench_launch(20 if q else 200)
    bench_throughput(20_000 if q else 300_000)
    bench_cancel_all(50 if q else 500)
    bench_idle_cpu(20 if q else 100, 2 if q else 10)
    bench_watchdog(5 if q else 30)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.helpers.home import private_jupyter_home

    private_jupyter_home("jupyter-cancel-bench-", remove_at_exit=True)  # never the user's home
    main()
