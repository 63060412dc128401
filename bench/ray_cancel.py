"""Ray tasks and their process trees (not a test): what survives Ray's own ways of stopping a
task, with plain ``subprocess`` in the task (stock) and with ``jc.run``.

    .venv/bin/python bench/ray_cancel.py [--n 3]

Every task holds the same tree: a shell, a background job, a setsid member and a double-fork
daemon (5 announced processes, all honouring SIGTERM; tests/helpers/dask_tasks.py). Actions:
``ray.cancel(ref)``, ``ray.cancel(ref, force=True)``, and the driver SIGKILLed (a driver
process of its own, which started the local Ray). Survivors are counted 5 s after the action;
for trees that ended, the time from the action to the last process gone.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import ray  # noqa: E402

from bench.bench_core import end, gone_or_end, pct  # noqa: E402
from tests.helpers.dask_tasks import MEMBERS, run_task, tree_task  # noqa: E402
from tests.helpers.procs import wait_ready  # noqa: E402
from tests.helpers.wait import wait_gone  # noqa: E402

WAIT = 5.0
TASKS = {"stock (subprocess)": tree_task, "jc.run": run_task}


def outcome(pids: list[int], t0: float) -> tuple[int, float | None]:
    left, took = gone_or_end(pids, t0, WAIT)
    return len(left), took


def cell(results: list[tuple[int, float | None]]) -> str:
    survivors = sum(r[0] for r in results)
    times = [r[1] for r in results if r[1] is not None]
    timing = f", gone p50 {pct(times, 50):.0f} ms" if times else ""
    return f"{survivors}/{len(results) * MEMBERS}{timing}"


def in_process(n: int, tmp: Path) -> dict[str, dict[str, str]]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    out: dict[str, dict[str, str]] = {}
    try:
        for action, force in (("ray.cancel(ref)", False), ("ray.cancel(ref, force=True)", True)):
            out[action] = {}
            for label, fn in TASKS.items():
                results = []
                for i in range(n):
                    ready = tmp / f"{label[:2]}-{force}-{i}"
                    ref = ray.remote(fn).remote(str(ready))
                    pids = wait_ready(ready, MEMBERS, timeout=60)
                    t0 = time.perf_counter()
                    ray.cancel(ref, force=force)
                    results.append(outcome(pids, t0))
                out[action][label] = cell(results)
    finally:
        ray.shutdown()
    return out


DRIVER = textwrap.dedent(
    """
    import sys, ray
    sys.path.insert(0, {root!r})
    from tests.helpers.dask_tasks import run_task, tree_task
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    ref = ray.remote({fn}).remote({ready!r})
    sys.stdin.read()
    """
)


def driver_killed(n: int, tmp: Path) -> dict[str, str]:
    out = {}
    for label, fn in TASKS.items():
        results = []
        for i in range(n):
            ready = tmp / f"drv-{label[:2]}-{i}"
            code = DRIVER.format(root=str(ROOT), fn=fn.__name__, ready=str(ready))
            driver = subprocess.Popen(
                [sys.executable, "-c", code], stdin=subprocess.PIPE, cwd=ROOT, stderr=subprocess.DEVNULL
            )
            pids = wait_ready(ready, MEMBERS, timeout=120)
            family = [p.pid for p in psutil.Process(driver.pid).children(recursive=True)]
            t0 = time.perf_counter()
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait()
            assert driver.stdin is not None
            driver.stdin.close()
            results.append(outcome(pids, t0))
            end([p for p in family if p not in pids])  # the driver's own Ray cluster, if it outlived it
            wait_gone(family, timeout=10)
        out[label] = cell(results)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows = in_process(args.n, tmp)
        rows["driver SIGKILLed"] = driver_killed(args.n, tmp)
    print(f"| action (n={args.n} trees of {MEMBERS} each) | " + " | ".join(TASKS) + " |")
    print("|---|" + "---|" * len(TASKS))
    for action, cells in rows.items():
        print(f"| {action} | " + " | ".join(cells[label] for label in TASKS) + " |")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.helpers.home import private_jupyter_home

    private_jupyter_home("jupyter-cancel-bench-", remove_at_exit=True)  # never the user's home
    main()
