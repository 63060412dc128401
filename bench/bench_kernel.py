"""Kernel benchmarks (not tests): trigger → whole tree gone, through a real python3 kernel.

    .venv/bin/python bench/bench_kernel.py [--n 30]

Tree: 3 processes, SIGTERM-respecting, with a setsid grandchild. "Gone" = every pid's
pidfd turned readable (exited). The same scenarios run on a stock kernel (no extension,
the tree started with subprocess.Popen as users do) and report which processes survive.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers.kernel import Kernel
from tests.helpers.procs import TREE, alive, wait_ready


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def start(k: Kernel, cell: str, ready: str, stock: bool = False) -> list[int]:
    launch = (
        f"subprocess.Popen([sys.executable, {TREE!r}, 'three', {ready!r}])"
        if stock
        else f"jc.start([sys.executable, {TREE!r}, 'three', {ready!r}], display=False)"
    )
    r = k.execute(
        f"import sys, subprocess\nfrom pathlib import Path\nfrom tests.helpers.procs import wait_ready\n"
        f"_p = {launch}\nprint(wait_ready(Path({ready!r}), 3))",
        cell=cell,
    )
    assert r.ok, r
    return eval(r.stdout.strip().splitlines()[-1])


def gone_after(pids: list[int], trigger, timeout: float = 5.0) -> float | None:
    """ms from trigger() to every pid exited; None if some survive ``timeout``."""
    fds = [os.pidfd_open(p) for p in pids]
    t = time.perf_counter()
    trigger()
    deadline = t + timeout
    try:
        for fd in fds:
            left = deadline - time.perf_counter()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
        return (time.perf_counter() - t) * 1000
    finally:
        for fd in fds:
            os.close(fd)


def kill_left(pids: list[int]) -> int:
    left = [p for p in pids if alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    return len(left)


def report(label: str, lat: list[float]) -> None:
    print(f"{label}: p50 {pct(lat, 50):.1f} ms  p99 {pct(lat, 99):.1f} ms  (n={len(lat)})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=30)
    n = parser.parse_args().n
    tmp = tempfile.mkdtemp()
    k = Kernel()
    # re-run: trigger = the execute_request of the re-run; also the delay it adds before the code starts
    lat, delay, base = [], [], []
    for i in range(n):
        pids = start(k, "rerun", f"{tmp}/r{i}")
        sent = {}

        def rerun():
            sent["t"] = time.time()
            sent["msg"] = k.send("import time; print(time.time())", cell="rerun")

        lat.append(gone_after(pids, rerun))
        delay.append((float(k.collect(sent["msg"]).stdout) - sent["t"]) * 1000)
        t = time.time()
        base.append((float(k.execute("import time; print(time.time())", cell="plain").stdout) - t) * 1000)
    report("re-run of the cell -> old tree gone", lat)
    print(
        f"  delay before the new code starts: p50 {pct(delay, 50):.1f} ms p99 {pct(delay, 99):.1f} ms; "
        f"same cell without work: p50 {pct(base, 50):.1f} ms -> added p50 {pct(delay, 50) - pct(base, 50):.1f} ms"
    )
    # control-channel cancel while the cell sleeps
    lat = []
    for i in range(n):
        pids = start(k, "bg", f"{tmp}/c{i}")
        msg = k.send("import time; time.sleep(1000)", cell="sleeper")
        time.sleep(0.05)
        sent: list[dict] = []
        # From the request leaving to the tree gone (the reply, sent once the operation has
        # ended and listing the kernel's operations, is collected after).
        lat.append(
            gone_after(pids, lambda: sent.append(k.control_send({"action": "cancel", "cell_id": "bg"})))
        )
        k.control_reply(sent[0])
        k.km.interrupt_kernel()
        k.collect(msg)
    report("control-channel cancel while the cell sleeps", lat)
    # control-channel cancel of a cell blocked in jc.run (it waits on the operation)
    lat = []
    for i in range(n):
        ready = f"{tmp}/jrun{i}"
        msg = k.send(
            f"import jupyter_cancel as jc, sys\njc.run([sys.executable, {TREE!r}, 'three', {ready!r}], display=False)",
            cell="runner",
        )
        pids = wait_ready(Path(ready), 3)
        sent = []
        lat.append(
            gone_after(pids, lambda: sent.append(k.control_send({"action": "cancel", "cell_id": "runner"})))
        )
        k.control_reply(sent[0])
        k.collect(msg)  # jc.run raised jc.Cancelled
    report("control-channel cancel of a cell blocked in jc.run", lat)
    # interrupt busy / idle
    for busy in (True, False):
        lat = []
        for i in range(n):
            pids = start(k, "bg", f"{tmp}/i{busy}{i}")
            msg = k.send("import time; time.sleep(1000)", cell="sleeper") if busy else None
            if busy:
                time.sleep(0.05)
            lat.append(gone_after(pids, k.km.interrupt_kernel))
            if msg:
                k.collect(msg)
        report(f"interrupt ({'busy' if busy else 'idle'})", lat)
    k.close()
    # shutdown: tree gone before the kernel process exits
    order_ok = 0
    for i in range(min(n, 10)):
        k = Kernel()
        pids = start(k, "a", f"{tmp}/s{i}")
        fds = {p: os.pidfd_open(p) for p in pids + [k.pid]}
        k.kc.stop_channels()
        k.km.request_shutdown()
        exit_t = {}
        while len(exit_t) < len(fds):
            for fd in select.select(list(set(fds.values()) - set(exit_t)), [], [], 10)[0]:
                exit_t[fd] = time.perf_counter()
        tree_last = max(exit_t[fds[p]] for p in pids)
        order_ok += tree_last <= exit_t[fds[k.pid]]
        for fd in fds.values():
            os.close(fd)
        k.km.finish_shutdown()
        k.km.cleanup_resources()
    print(f"shutdown: tree gone before the kernel process exited in {order_ok} of {min(n, 10)} runs")
    lat = []
    for i in range(min(n, 10)):
        k = Kernel()
        pids = start(k, "a", f"{tmp}/k{i}")
        lat.append(gone_after(pids, lambda: os.kill(k.pid, signal.SIGKILL)))
        k.kc.stop_channels()
        k.km.shutdown_kernel(now=True)
    report("kernel SIGKILL -> tree gone (watchdog)", lat)

    # stock kernel: which processes survive each trigger
    print("stock kernel (no extension, subprocess.Popen), processes of 3 still alive after 2 s:")
    k = Kernel(load_ext=False)
    pids = start(k, "x", f"{tmp}/st1", stock=True)
    k.execute("1", cell="x")
    time.sleep(2)
    print(f"  re-run: {kill_left(pids)}")
    pids = start(k, "x", f"{tmp}/st2", stock=True)
    msg = k.send("import time; time.sleep(1000)", cell="sleeper")
    time.sleep(0.1)
    k.km.interrupt_kernel()
    k.collect(msg)
    time.sleep(2)
    print(f"  interrupt (busy): {kill_left(pids)}")
    pids = start(k, "x", f"{tmp}/st3", stock=True)
    k.km.interrupt_kernel()
    time.sleep(2)
    print(f"  interrupt (idle): {kill_left(pids)}")
    pids = start(k, "x", f"{tmp}/st4", stock=True)
    k.close()
    time.sleep(2)
    print(f"  shutdown: {kill_left(pids)}")
    k = Kernel(load_ext=False)
    pids = start(k, "x", f"{tmp}/st5", stock=True)
    os.kill(k.pid, signal.SIGKILL)
    time.sleep(2)
    print(f"  kernel SIGKILL: {kill_left(pids)}")
    k.kc.stop_channels()
    k.km.shutdown_kernel(now=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.helpers.home import private_jupyter_home

    private_jupyter_home("jupyter-cancel-bench-", remove_at_exit=True)  # never the user's home
    main()
