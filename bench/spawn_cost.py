"""What capture costs a spawn (not a test): a stock kernel and a kernel with jupyter_cancel,
side by side in one run, the same work timed inside each, rounds interleaved.

    .venv/bin/python bench/spawn_cost.py [--rounds 3] [--pairs 15] [--mp]

Per round and kernel: p50 of 200 ``subprocess.run(["true"])``, ``os.system("true")`` and
``check_output(["echo", "x"])``; a loop of 1000 ``subprocess.run(["true"])``; a
``ProcessPoolExecutor(2)`` started and mapped over 200 items; zombies left under the kernel
after 10 re-runs of a plain ``Popen`` cell. ``--mp``: CPython's multiprocessing process tests
(spawn start method) timed in each kernel too. Figures are the median over rounds.

The loop of 1000, the three p50s and the pool are also measured in ``--pairs`` back-to-back
pairs (the two kernels in turn, the order swapped every pair: ABBA), the ratio (for the p50s,
the difference) taken within each pair and its median reported: a machine that slows down for
a minute slows both halves of a pair alike, where medians taken separately per kernel minutes
apart carry that drift into the ratio. Each loop also reports the
kernel's CPU (every thread, ``time.process_time``) per spawn, read after the capture's tick has
settled: work done after the loop returns counts too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers import cpython
from tests.helpers.kernel import Kernel

P50 = (
    "import os, subprocess, time\n"
    "def _p50(fn, n=200):\n"
    "    fn()\n"
    "    t = []\n"
    "    for _ in range(n):\n"
    "        s = time.perf_counter(); fn(); t.append(time.perf_counter() - s)\n"
    "    t.sort(); return t[n // 2] * 1000\n"
)
WORK = {
    "subprocess.run(['true']) p50 ms": "_p50(lambda: subprocess.run(['true']))",
    "os.system('true') p50 ms": "_p50(lambda: os.system('true'))",
    "check_output(['echo','x']) p50 ms": "_p50(lambda: subprocess.check_output(['echo', 'x']))",
    "1000 x subprocess.run(['true']) s": (
        "(lambda s: ([subprocess.run(['true']) for _ in range(1000)], time.perf_counter() - s)[1])"
        "(time.perf_counter())"
    ),
}
#: The three p50s, measured in each kernel of every pair too (after its loop): a difference taken
#: within a pair, minutes of the machine's drift cancelled, as for the loop.
P50_LABELS = [label for label in WORK if "p50" in label]
P50_ALL = "(" + ", ".join(WORK[label] for label in P50_LABELS) + ")"
LOOP = (
    "(lambda s, c: ([subprocess.run(['true']) for _ in range(1000)],"
    " time.perf_counter() - s, time.sleep(0.2), (time.process_time() - c) * 1000)[1::2])"
    "(time.perf_counter(), time.process_time())"
)
POOL = (
    "import concurrent.futures\n"
    "_s = time.perf_counter()\n"
    "with concurrent.futures.ProcessPoolExecutor(2) as _ex:\n"
    "    list(_ex.map(abs, range(200)))\n"
    "print(repr((time.perf_counter() - _s) * 1000))"
)
ZOMBIES = (
    "import psutil\n"
    "print(repr(sum(1 for c in psutil.Process().children() if c.status() == psutil.STATUS_ZOMBIE)))"
)


def measure(k: Kernel) -> dict[str, float]:
    out: dict[str, float] = {}
    k.execute(P50, cell="setup")
    for label, expr in WORK.items():
        out[label] = float(k.value(expr, cell="probe", timeout=300))
    out["ProcessPoolExecutor(2) start + map 200 ms"] = float(
        k.execute(POOL, cell="pool", timeout=300).stdout.split()[-1]
    )
    for _ in range(10):  # the same cell re-run (with jupyter_cancel its earlier child is ended)
        assert k.execute("import subprocess\n_z = subprocess.Popen(['sleep', '60'])", cell="plain").ok
    # The stock kernel's last child still runs: ended here, reaped by its Popen.
    k.execute("_z.kill(); _z.wait(); del _z\nimport gc; gc.collect()", cell="collect")
    out["zombies after 10 re-runs of a Popen cell"] = float(
        k.execute(ZOMBIES, cell="zombies").stdout.split()[-1]
    )
    return out


def paired_loops(kernels: dict[str, Kernel], pairs: int) -> dict[str, dict[str, float]]:
    """The 1000-spawn loop in ABBA pairs: per pair the ratio of wall times, and CPU per spawn."""
    (a, ka), (b, kb) = kernels.items()
    for k in (ka, kb):
        k.execute(P50, cell="setup")
        k.value(LOOP, cell="loop", timeout=300)  # warm-up, not counted
    walls: dict[str, list[float]] = {a: [], b: []}
    cpus: dict[str, list[float]] = {a: [], b: []}
    p50s: dict[str, list[tuple[float, ...]]] = {a: [], b: []}
    pools: dict[str, list[float]] = {a: [], b: []}
    for i in range(pairs):
        for name, k in ((a, ka), (b, kb)) if i % 2 == 0 else ((b, kb), (a, ka)):
            wall, cpu_ms = k.value(LOOP, cell="loop", timeout=300)
            walls[name].append(float(wall))
            cpus[name].append(float(cpu_ms))  # ms over 1000 spawns = µs per spawn
            p50s[name].append(tuple(float(x) for x in k.value(P50_ALL, cell="probe", timeout=300)))
            pools[name].append(float(k.execute(POOL, cell="pool", timeout=300).stdout.split()[-1]))
    ratios = sorted(y / x for x, y in zip(walls[a], walls[b], strict=True))
    deltas = {
        label: sorted(y[j] - x[j] for x, y in zip(p50s[a], p50s[b], strict=True))
        for j, label in enumerate(P50_LABELS)
    }
    pool = sorted(y / x for x, y in zip(pools[a], pools[b], strict=True))
    return {
        "ProcessPoolExecutor(2) start + map 200, ratio within ABBA pairs": {
            "median": round(statistics.median(pool), 3),
            "quartiles": [round(q, 3) for q in statistics.quantiles(pool, n=4)[::2]],
        },
        **{
            f"{label}, delta within ABBA pairs": {
                "median": round(statistics.median(d), 3),
                "quartiles": [round(q, 3) for q in statistics.quantiles(d, n=4)[::2]],
            }
            for label, d in deltas.items()
        },
        "1000 x subprocess.run(['true']), ratio within ABBA pairs": {
            "pairs": pairs,
            "median": round(statistics.median(ratios), 3),
            "quartiles": [round(q, 3) for q in statistics.quantiles(ratios, n=4)[::2]],
            f"{a} s": round(statistics.median(walls[a]), 3),
            f"{b} s": round(statistics.median(walls[b]), 3),
        },
        "kernel CPU per spawn (all threads) us": {
            a: round(statistics.median(cpus[a]), 1),
            b: round(statistics.median(cpus[b]), 1),
            "delta": round(statistics.median(cpus[b]) - statistics.median(cpus[a]), 1),
        },
    }


def mp_tests(k: Kernel) -> float:
    started = time.perf_counter()
    result = cpython.run(k, ["mp:spawn"])
    assert "pid" in result, result
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=15)
    ap.add_argument("--mp", action="store_true")
    args = ap.parse_args()
    kernels = {"stock": Kernel(load_ext=False), "jupyter_cancel": Kernel(load_ext=True)}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in kernels}
    paired: dict[str, dict[str, float]] = {}
    try:
        if args.pairs:
            paired = paired_loops(kernels, args.pairs)
        for _ in range(args.rounds):
            for name, k in kernels.items():
                runs[name].append(measure(k))
        if args.mp:
            for name, k in kernels.items():
                for run in runs[name][:1]:
                    run["CPython multiprocessing spawn process tests s"] = mp_tests(k)
    finally:
        for k in kernels.values():
            k.close()
    table: dict[str, dict[str, float]] = {}
    for label in runs["stock"][0] if runs["stock"] else ():
        stock = statistics.median(r[label] for r in runs["stock"] if label in r)
        ours = statistics.median(r[label] for r in runs["jupyter_cancel"] if label in r)
        row = {"stock": round(stock, 3), "jupyter_cancel": round(ours, 3)}
        if "zombies" not in label:
            row["delta" if "p50" in label else "ratio"] = round(
                ours - stock if "p50" in label else ours / stock, 3
            )
        table[label] = row
    print(json.dumps({"rounds": args.rounds, "figures": table, "paired": paired}, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.helpers.home import private_jupyter_home

    private_jupyter_home("jupyter-cancel-bench-", remove_at_exit=True)  # never the user's home
    main()
