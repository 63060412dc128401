"""In-process performance beside its floor (not a test): every figure of the "near the floor,
flat at scale" goals, each measured in the same run as the baseline it is compared with.

    .venv/bin/python bench/perf_floor.py [--n 30] [--ops 2000] [--wide 300] [--recipe]

* cancel → 3-process tree gone (root, child, setsid grandchild), interleaved with **the floor**:
  the same tree started with Popen, every pid already known, ``killpg`` + ``kill`` + a pidfd
  wait (``--recipe`` adds psutil's tree-kill recipe, n=3: it waits for reparented zombies);
* a wide tree (1 root, N-1 children, every other one in its own session) → gone, beside the
  floor for the same tree;
* ``cancel_all`` of OPS live ``sleep`` operations → all gone, idle and beside 4 busy loops:
  time, and how many SIGTERM-honouring ``sleep`` processes got SIGKILL ("outlived its grace");
* launch overhead of ``jc.start`` over ``subprocess.Popen``; registry register+complete per
  second (one thread); memory per live operation and per ended operation kept in history.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jupyter_cancel as jc
from bench.bench_core import bench_launch, bench_throughput, pct
from jupyter_cancel.core import Registry
from jupyter_cancel.core.ledger import HISTORY
from tests.helpers.procs import alive, tree_cmd, wait_ready


def wait_pidfds(fds: list[int], timeout: float = 30.0) -> None:
    """Until every pidfd is readable (its process exited)."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    left, deadline = set(fds), time.monotonic() + timeout
    while left:
        ready = poller.poll(max(0.0, deadline - time.monotonic()) * 1000)
        if not ready:
            raise TimeoutError(f"{len(left)} processes outlived the bench's timeout")
        for fd, _ in ready:
            poller.unregister(fd)
            left.discard(fd)
    for fd in fds:
        os.close(fd)


def ours(mode: str, ready: Path, count: int) -> float:
    op = jc.start(tree_cmd(mode, ready), display=False)
    pids = wait_ready(ready, count, timeout=60)
    fds = [os.pidfd_open(p) for p in pids]
    t = time.perf_counter()
    op.cancel()
    wait_pidfds(fds)
    return (time.perf_counter() - t) * 1000


#: A process of its own waits on the pidfds and says when the last one turned readable (the
#: monotonic clock is the same across processes): a thread of ours would wait for the GIL.
_WATCH = (
    "import os, select, sys, time\n"
    "fds = [os.pidfd_open(int(p)) for p in sys.argv[1:]]\n"
    "print('ready', flush=True)\n"
    "left = set(fds)\n"
    "while left:\n"
    "    r, _, _ = select.select(list(left), [], [])\n"
    "    left -= set(r)\n"
    "print(time.perf_counter(), flush=True)\n"
)


def ours_watched(mode: str, ready: Path, count: int) -> tuple[float, float]:
    """``op.cancel()`` timed twice: until it returns (the operation ended, its bookkeeping
    done) and, by a watcher process on the pidfds, until the last process is gone."""
    op = jc.start(tree_cmd(mode, ready), display=False)
    pids = wait_ready(ready, count, timeout=60)
    watcher = subprocess.Popen(
        [sys.executable, "-c", _WATCH, *map(str, pids)], stdout=subprocess.PIPE, text=True
    )
    assert watcher.stdout is not None and watcher.stdout.readline().strip() == "ready"
    t = time.perf_counter()
    op.cancel()
    returned = time.perf_counter()
    gone = float(watcher.stdout.readline())
    watcher.wait()
    return (returned - t) * 1000, (gone - t) * 1000


def floor(mode: str, ready: Path, count: int) -> float:
    proc = subprocess.Popen(tree_cmd(mode, ready), start_new_session=True)
    pids = wait_ready(ready, count, timeout=60)
    fds = [os.pidfd_open(p) for p in pids]
    own_group = [p for p in pids if os.getpgid(p) == p and p != proc.pid]
    t = time.perf_counter()
    os.killpg(proc.pid, signal.SIGTERM)  # the root's group: root and its non-setsid children
    for pid in own_group:
        os.kill(pid, signal.SIGTERM)  # each setsid member leads a group of its own
    wait_pidfds(fds)
    took = (time.perf_counter() - t) * 1000
    proc.wait()
    return took


def floor_same_launch(mode: str, ready: Path, count: int) -> float:
    """The floor on a tree started as ``jc.start`` starts it (its cgroup, its output piped to
    the monitor): the same bare kill, so the difference to ``ours`` is the termination's own."""
    op = jc.start(tree_cmd(mode, ready), display=False)
    pids = wait_ready(ready, count, timeout=60)
    fds = [os.pidfd_open(p) for p in pids]
    root = op.runner.popen.pid  # type: ignore[union-attr]
    own_group = [p for p in pids if os.getpgid(p) == p and p != root]
    t = time.perf_counter()
    os.killpg(root, signal.SIGTERM)
    for pid in own_group:
        os.kill(pid, signal.SIGTERM)
    wait_pidfds(fds)
    took = (time.perf_counter() - t) * 1000
    op.wait(10)
    return took


def recipe(ready: Path) -> float:
    proc = subprocess.Popen(tree_cmd("three", ready), start_new_session=True)
    wait_ready(ready, 3)
    t = time.perf_counter()
    parent = psutil.Process(proc.pid)
    procs = [*parent.children(recursive=True), parent]
    for p in procs:
        p.terminate()
    psutil.wait_procs(procs, timeout=5)
    took = (time.perf_counter() - t) * 1000
    proc.wait()
    return took


def compare(label: str, mode: str, count: int, n: int, tmp: Path) -> tuple[list[float], list[float]]:
    a, b, c = [], [], []
    for i in range(n):
        a.append(ours(mode, tmp / f"{mode}-o{i}", count))
        b.append(floor(mode, tmp / f"{mode}-f{i}", count))
        c.append(floor_same_launch(mode, tmp / f"{mode}-s{i}", count))
    print(
        f"{label}: jupyter_cancel p50 {pct(a, 50):.2f} ms (p99 {pct(a, 99):.2f}); floor p50 {pct(b, 50):.2f} ms "
        f"(p99 {pct(b, 99):.2f}); ratio of p50 {pct(a, 50) / pct(b, 50):.2f}; floor on the same launch "
        f"(cgroup, piped output) p50 {pct(c, 50):.2f} ms, ratio {pct(a, 50) / pct(c, 50):.2f}  (n={n})"
    )
    return a, b


class KillCounter(logging.Handler):
    """Counts the core's "outlived its grace, sending SIGKILL" warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "outlived its grace" in record.getMessage():
            self.count += 1


def busy_loops(k: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(k)]


def cancel_all(n: int, load: int) -> None:
    loops = busy_loops(load)
    counter = KillCounter()
    logging.getLogger("jupyter_cancel").addHandler(counter)
    try:
        rss0 = psutil.Process().memory_info().rss
        t = time.perf_counter()
        ops = [jc.start(["sleep", "600"], display=False) for _ in range(n)]
        started = time.perf_counter() - t
        per_op = (psutil.Process().memory_info().rss - rss0) / n
        pids = [p for op in ops for p in op.pids()]
        fds = [os.pidfd_open(p) for p in pids]
        # "Gone" is seen by a thread of its own, while cancel_all still does its bookkeeping.
        gone_at: list[float] = []
        watcher = threading.Thread(target=lambda: (wait_pidfds(fds), gone_at.append(time.perf_counter())))
        watcher.start()
        t = time.perf_counter()
        cancelled = jc.cancel_all()
        took = time.perf_counter() - t
        watcher.join()
        gone = gone_at[0] - t
        assert len(cancelled) == n and not [p for p in pids if alive(p)]
    finally:
        logging.getLogger("jupyter_cancel").removeHandler(counter)
        for p in loops:
            p.kill()
            p.wait()
    print(
        f"cancel_all of {n} live operations{f' beside {load} busy loops' if load else ''}: returned in "
        f"{took * 1000:.0f} ms, all gone in {gone * 1000:.0f} ms, SIGKILLs sent: {counter.count} "
        f"(starting them took {started:.1f} s; kernel-side RSS per live operation ≈ {per_op / 1024:.1f} KiB)"
    )


def kill_all_floor(n: int, load: int) -> None:
    """The floor for cancel_all: N sleeps started with Popen, every pid known, one SIGTERM each."""
    loops = busy_loops(load)
    try:
        procs = [subprocess.Popen(["sleep", "600"], start_new_session=True) for _ in range(n)]
        fds = [os.pidfd_open(p.pid) for p in procs]
        t = time.perf_counter()
        for p in procs:
            os.kill(p.pid, signal.SIGTERM)
        wait_pidfds(fds)
        gone = time.perf_counter() - t
        for p in procs:
            p.wait()
    finally:
        for p in loops:
            p.kill()
            p.wait()
    print(
        f"floor: {n} known pids, kill + pidfd wait{f' beside {load} busy loops' if load else ''}: all gone in {gone * 1000:.0f} ms"
    )


def history_memory() -> None:
    reg = Registry(watchdog=False)
    for _ in range(HISTORY):  # fill the history once (its deque, the allocator's arenas)
        op = reg.new(name="warm-up", kind="scope")
        reg.register(op)
        reg.finish(op, jc.State.COMPLETED)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(HISTORY):
        op = reg.new(name=f"cell {i}: make -j8", kind="process")
        reg.register(op)
        reg.finish(op, jc.State.COMPLETED)
    gc.collect()
    after = tracemalloc.take_snapshot()
    retained = sum(s.size_diff for s in after.compare_to(before, "filename"))
    for _ in range(10 * HISTORY):  # many more: the history stays bounded
        op = reg.new(name="more", kind="scope")
        reg.register(op)
        reg.finish(op, jc.State.COMPLETED)
    kept = len(reg.operations(include_done=True))
    tracemalloc.stop()
    print(
        f"ended operations kept in history: {kept} (bounded at {HISTORY}); memory per ended operation "
        f"≈ {max(retained, 0) / HISTORY:.0f} B (tracemalloc, {HISTORY} replaced by {HISTORY})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--wide", type=int, default=300)
    parser.add_argument("--load", type=int, default=4)
    parser.add_argument("--recipe", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated: tree,wide,all,launch,registry,history")
    args = parser.parse_args()
    only = (
        set(args.only.split(",")) if args.only else {"tree", "wide", "all", "launch", "registry", "history"}
    )
    print(f"# {platform.platform()} {os.cpu_count()} cores, python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if "tree" in only:
            compare("cancel → 3-process tree gone", "three", 3, args.n, tmp)
            watched = [ours_watched("three", tmp / f"w{i}", 3) for i in range(args.n)]
            print(
                f"  the same, timed by a watcher process on the pidfds: tree gone p50 "
                f"{pct([w[1] for w in watched], 50):.2f} ms, op.cancel() returned p50 "
                f"{pct([w[0] for w in watched], 50):.2f} ms  (n={args.n})"
            )
            if args.recipe:
                r = [recipe(tmp / f"recipe{i}") for i in range(3)]
                print(f"psutil's recipe (children + terminate + wait_procs): p50 {pct(r, 50):.0f} ms (n=3)")
        if "wide" in only:
            compare(
                f"cancel → wide tree of {args.wide} (half setsid) gone",
                f"wide{args.wide}",
                args.wide,
                max(3, args.n // 6),
                tmp,
            )
    if "all" in only:
        cancel_all(args.ops, 0)
        kill_all_floor(args.ops, 0)
        cancel_all(args.ops, args.load)
        kill_all_floor(args.ops, args.load)
    if "launch" in only:
        bench_launch(200)
    if "registry" in only:
        bench_throughput(100_000, rounds=5)
    if "history" in only:
        history_memory()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.helpers.home import private_jupyter_home

    private_jupyter_home("jupyter-cancel-bench-", remove_at_exit=True)  # never the user's home
    main()
