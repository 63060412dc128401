"""Spark from a notebook, with real pyspark on Debian's Java in a real kernel: a cell's Spark jobs
are its work (every trigger that ends the cell's work cancels exactly its jobs), the driver JVM
is the kernel's (it outlives interrupts, re-runs and Stop; a restart ends it), in classic local
mode and with the local Spark Connect server.

Spark's own view decides: its UI's REST API (running jobs, from outside the kernel) and
``spark.range(10).count()`` answering afterwards."""

from __future__ import annotations

import json
import shutil
import socket
import urllib.request

import psutil
import pytest

from tests.helpers.kernel import Kernel
from tests.helpers.procs import left_alive
from tests.helpers.wait import until

pyspark = pytest.importorskip("pyspark")
pytestmark = [
    pytest.mark.skipif(
        shutil.which("java") is None, reason="Spark needs a Java runtime (scripts/test.sh installs it)"
    ),
    pytest.mark.timeout(600),
]

#: A job that runs until it is cancelled (4 tasks on 2 cores: some are always running).
LONG_JOB = "sc.parallelize(range(4), 4).map(lambda x: __import__('time').sleep(600) or x).collect()"
#: The same through Spark Connect (no RDD API there): a Python UDF that sleeps.
CONNECT_JOB = (
    "spark.range(4).repartition(4).mapInPandas("
    "lambda it: (__import__('time').sleep(600) or x for x in it), 'id long').collect()"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup(connect: bool) -> str:
    builder = (
        "from pyspark.sql import SparkSession\n"
        f"builder = (SparkSession.builder.master('local[2]').config('spark.ui.port', '{_free_port()}')"
        ".config('spark.ui.showConsoleProgress', 'false'))\n"
    )
    if connect:
        return builder.replace(".master('local[2]')", ".remote('local[2]')") + (
            "spark = builder.getOrCreate()\n"
            "from pyspark import SparkContext\n"
            "sc = SparkContext._active_spark_context\n"  # the server's, in this process
            "print(sc.uiWebUrl, sc.applicationId)\n"
        )
    return builder + (
        "spark = builder.getOrCreate()\nsc = spark.sparkContext\nprint(sc.uiWebUrl, sc.applicationId)\n"
    )


class Spark:
    """A kernel with a Spark session made in cell A, and Spark's REST API read from outside."""

    def __init__(self, connect: bool = False, stock: bool = False) -> None:
        """``stock``: a kernel without jupyter_cancel (the benches' baseline)."""
        self.connect = connect
        self.kernel = Kernel(load_ext=not stock)
        try:
            r = self.kernel.execute(_setup(connect), cell="A", timeout=300)
            assert r.ok, r.errors
            # (Spark's own warnings share the stream: the line the cell printed.)
            self.ui, self.app = next(
                line for line in r.stdout.splitlines() if line.startswith("http")
            ).split()
            self.jvm = self.kernel.value(
                "[o.runner.pid for o in jc.operations() if o.kind == 'process']"
                if not stock
                else "[c.pid for c in __import__('psutil').Process().children() if 'java' in c.name()]",
                cell="pids",
            )
            assert self.jvm, "the driver JVM is an operation of the kernel's"
        except BaseException:
            self.kernel.close()
            raise

    def running_jobs(self) -> list[dict]:
        url = f"{self.ui}/api/v1/applications/{self.app}/jobs?status=running"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)

    def job_runs(self, cell: str) -> str:
        """Send a job that runs until cancelled as ``cell``; return once Spark runs it."""
        before = len(self.running_jobs())
        msg = self.kernel.send(_job(self), cell=cell)
        until(lambda: len(self.running_jobs()) > before, 120, f"a running job of cell {cell}")
        return msg

    def jobs_gone(self, count: int = 0) -> None:
        until(lambda: len(self.running_jobs()) <= count, 60, "the cancelled jobs gone from Spark")

    def counts(self) -> int | None:
        """``spark.range(10).count()`` in a cell (None if it failed). Spark's own log lines
        share the cell's stream: the answer is the line marked as ours."""
        r = self.kernel.execute("print('count:', spark.range(10).count())", cell="check", timeout=120)
        found = [line.split()[-1] for line in r.stdout.splitlines() if line.startswith("count: ")]
        return int(found[-1]) if r.ok and found else None

    def still_works(self) -> None:
        assert self.counts() == 10

    def close(self) -> None:
        self.kernel.close()
        until(lambda: not left_alive(self.jvm), 60, f"driver JVM gone: {left_alive(self.jvm)}")


@pytest.fixture(params=["classic", "connect"])
def spark(request):
    s = Spark(connect=request.param == "connect")
    yield s
    s.close()


def test_interrupt_cancels_the_cells_jobs_and_keeps_the_session(spark):
    msg = spark.job_runs("B")
    spark.kernel.km.interrupt_kernel()
    result = spark.kernel.collect(msg, timeout=120)
    assert [e["ename"] for e in result.errors] == ["KeyboardInterrupt"]
    spark.jobs_gone()
    assert left_alive(spark.jvm) == spark.jvm  # the driver JVM is the kernel's: it lives on
    spark.still_works()


def test_a_busy_rerun_stop_cancels_the_cells_jobs_and_reads_as_a_stop(spark):
    msg = spark.job_runs("B")
    reply = spark.kernel.control({"action": "stop_cell", "cell_id": "B", "reason": "cell_rerun"})
    assert reply.get("running") is True, reply
    result = spark.kernel.collect(msg, timeout=120)
    assert [e["ename"] for e in result.errors] == ["Cancelled"], result.errors
    spark.jobs_gone()
    assert left_alive(spark.jvm) == spark.jvm
    spark.still_works()


def test_stop_of_the_cells_work_cancels_its_jobs(spark):
    msg = spark.job_runs("B")
    reply = spark.kernel.control({"action": "cancel", "cell_id": "B", "reason": "user"})
    assert reply.get("cancelled"), reply
    result = spark.kernel.collect(msg, timeout=120)
    assert [e["ename"] for e in result.errors] == ["Cancelled"], result.errors
    spark.jobs_gone()
    spark.still_works()


def test_rerunning_the_setup_cell_keeps_a_working_session(spark):
    r = spark.kernel.execute(_setup(spark.connect), cell="A", timeout=300)
    assert r.ok, r.errors
    assert left_alive(spark.jvm) == spark.jvm
    spark.still_works()


def test_another_cells_job_in_a_thread_is_untouched(spark):
    spark.kernel.execute(
        "import threading\n"
        f"def _background():\n    return {_job(spark)}\n"
        "background = threading.Thread(target=_background, daemon=True)\n"
        "background.start()\n",
        cell="T",
    )
    until(lambda: len(spark.running_jobs()) == 1, 120, "the background job running")
    msg = spark.job_runs("B")
    spark.kernel.km.interrupt_kernel()
    spark.kernel.collect(msg, timeout=120)
    spark.jobs_gone(count=1)  # B's job went; T's is still there
    assert len(spark.running_jobs()) == 1
    cancel_all = "spark.interruptAll()" if spark.connect else "sc.cancelAllJobs()"
    spark.kernel.execute(cancel_all, cell="cleanup")
    spark.jobs_gone()


def test_restart_ends_the_driver_and_its_workers():
    s = Spark()
    try:
        s.job_runs("B")
        workers = until(
            lambda: [c.pid for pid in s.jvm for c in psutil.Process(pid).children(recursive=True)],
            60,
            "the job's Python workers running under the driver JVM",
        )
        s.kernel.km.restart_kernel(now=False)
        until(lambda: not left_alive(s.jvm + workers), 60, "the driver JVM and its Python workers gone")
    finally:
        s.close()


def _job(spark: Spark) -> str:
    return CONNECT_JOB if spark.connect else LONG_JOB
