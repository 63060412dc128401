"""Interrupting a cell that waits on a Spark job (not a test): how long until Spark itself no
longer runs the job — a kernel with jupyter_cancel beside a stock kernel, in one run.

    .venv/bin/python bench/spark_interrupt.py [--runs 10] [--connect] [--stock-wait 10]

Per run, on one kernel of each kind with a local[2] session (made once): cell B starts a job
that runs until cancelled; once Spark's REST API lists it, Kernel → Interrupt; the clock stops
when the REST API lists no running job (stock: after ``--stock-wait`` seconds it is recorded
as still running, and the job is cancelled by hand before the next run). Also: whether
``spark.range(10).count()`` answers after each interrupt, and the driver JVM still runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers.procs import left_alive
from tests.spark.test_spark_kernel import Spark


def one(spark: Spark, limit: float) -> tuple[float | None, bool]:
    msg = spark.job_runs("B")
    start = time.perf_counter()
    spark.kernel.km.interrupt_kernel()
    gone = None
    while time.perf_counter() - start < limit:
        if not spark.running_jobs():
            gone = time.perf_counter() - start
            break
        time.sleep(0.02)
    if gone is None:  # stock: the job runs on; cancel it (from a cell: it answers once B ended)
        spark.kernel.collect(msg, timeout=120)
        spark.kernel.execute(
            "spark.interruptAll()" if spark.connect else "sc.cancelAllJobs()", cell="cleanup"
        )
        while spark.running_jobs():
            time.sleep(0.05)
    else:
        spark.kernel.collect(msg, timeout=120)
    works = spark.counts() == 10
    return gone, works and left_alive(spark.jvm) == spark.jvm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--connect", action="store_true")
    parser.add_argument("--stock-wait", type=float, default=10.0)
    args = parser.parse_args()
    result = {}
    for label, stock in (("jupyter_cancel", False), ("stock", True)):
        spark = Spark(connect=args.connect, stock=stock)
        try:
            runs = [one(spark, 60.0 if not stock else args.stock_wait) for _ in range(args.runs)]
        finally:
            spark.close()
        times = [t for t, _ in runs if t is not None]
        result[label] = {
            "job gone p50 s": round(statistics.median(times), 3) if times else None,
            "job gone max s": round(max(times), 3) if times else None,
            f"still running after the wait (of {args.runs})": args.runs - len(times),
            "session works after (of runs)": sum(ok for _, ok in runs),
        }
    print(json.dumps({"mode": "connect" if args.connect else "classic", **result}, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.helpers.home import private_jupyter_home

    private_jupyter_home("jupyter-cancel-bench-", remove_at_exit=True)  # never the user's home
    main()
