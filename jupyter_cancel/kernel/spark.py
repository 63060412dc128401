"""Spark from a notebook: a cell run's Spark jobs are its work; the Spark session is the kernel's.

While a cell runs, every Spark entry point the user made — a classic ``SparkContext`` (local or
a cluster's driver) and a Spark Connect session — tags the jobs it starts from the cell's thread
with the run (``SparkContext.addJobTag``, ``SparkSession.addTag``), and the run has a ``spark``
operation: every trigger that ends the cell's work (interrupt, a busy re-run's cell stop, Stop
in the panel or over REST, a deleted cell, a closed tab under its policy) cancels exactly those
jobs (``cancelJobsWithTag``, ``interruptTag``). Other cells' jobs — another cell's thread, a
``continue`` cell — carry other tags and are untouched. The driver JVM and the local Connect
server belong to the kernel (``capture.HELPER_LIBRARIES``): they are not this cell's to end.

Nothing here imports pyspark: the entry points are looked up in ``sys.modules``, so the order
of ``import pyspark``, the session's creation and the extension's load does not matter.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

from ..core.model import State
from ..core.operation import Operation

log = logging.getLogger(__name__)

TAG_PREFIX = "jupyter-cancel-"


class _Classic:
    """A ``SparkContext``: job tags are per JVM thread (pyspark pins each Python thread to one)."""

    kind = "classic"

    def __init__(self, sc: Any) -> None:
        self.sc = sc

    def tag(self, tag: str) -> None:
        self.sc.addJobTag(tag)
        self.sc.setInterruptOnCancel(True)  # a task blocked in Python or I/O stops too

    def untag(self, tag: str) -> None:
        self.sc.removeJobTag(tag)

    def cancel(self, tag: str) -> None:
        self.sc.cancelJobsWithTag(tag)

    def reset_thread(self) -> None:
        """Drop this thread's py4j connection: an interrupt that landed while it waited for
        the JVM's answer left that answer unread, and the next call on it would read it as its
        own (and wait behind the cancelled job first). The next call opens a fresh one."""
        client = getattr(getattr(self.sc, "_gateway", None), "_gateway_client", None)
        connection = client.get_thread_connection() if hasattr(client, "get_thread_connection") else None
        if connection is not None:
            connection.close()
            client.thread_connection.connection = None


class _Connect:
    """A Spark Connect session: tags are per Python thread, sent with every operation."""

    kind = "connect"

    def __init__(self, session: Any) -> None:
        self.session = session

    def tag(self, tag: str) -> None:
        self.session.addTag(tag)

    def untag(self, tag: str) -> None:
        self.session.removeTag(tag)

    def cancel(self, tag: str) -> None:
        self.session.interruptTag(tag)

    def reset_thread(self) -> None:
        pass  # gRPC: every call is its own stream


def entry_points() -> list[Any]:
    """The live Spark entry points of this process (none unless the user imported pyspark)."""
    found: list[Any] = []
    for name in ("pyspark.core.context", "pyspark.context"):
        module = sys.modules.get(name)
        sc = getattr(getattr(module, "SparkContext", None), "_active_spark_context", None)
        if sc is not None and getattr(sc, "_jsc", None) is not None:
            found.append(_Classic(sc))
            break
    connect = sys.modules.get("pyspark.sql.connect.session")
    if connect is not None:
        try:
            session = connect.SparkSession.getActiveSession()
        except Exception:  # a session being torn down
            session = None
        if session is not None and not getattr(session, "is_stopped", False):
            found.append(_Connect(session))
    return found


class SparkJobs:
    """The ``spark`` operation's runner: a cell run's jobs, by tag, on every entry point."""

    def __init__(self, targets: list[Any], tag: str) -> None:
        self.targets = targets
        self.tag = tag

    # -- the runner protocol ------------------------------------------------------------------
    def pids(self) -> list[int]:
        return []  # in the JVM's executors, never processes of ours to signal

    def identity(self) -> dict[str, Any]:
        return {}

    def request_cancel(self, op: Operation) -> None:
        # On a thread of its own: a trigger may come on the cell's own thread (the interrupt's
        # signal handler) while it waits inside a py4j call, whose connection a second call
        # from the same thread would corrupt.
        threading.Thread(target=self._cancel, args=(op,), name="jupyter_cancel-spark", daemon=True).start()

    def wait_gone(self, op: Operation, timeout: float) -> bool:
        return op.wait(timeout).done

    def _cancel(self, op: Operation) -> None:
        for target in self.targets:
            try:
                target.cancel(self.tag)
            except Exception as err:  # a session stopped meanwhile: nothing of it runs
                log.debug("cancelling Spark jobs tagged %s on %s: %s", self.tag, target.kind, err)
        op.registry.finish(op, State.CANCELLED)

    # -- the cell run -----------------------------------------------------------------------
    def begin(self) -> None:
        for target in self.targets:
            try:
                target.tag(self.tag)
            except Exception as err:
                log.debug("tagging Spark jobs on %s: %s", target.kind, err)

    def end(self, op: Operation) -> None:
        """At the cell run's end, on its thread."""
        for target in self.targets:
            try:
                if op.cancel_requested:
                    target.reset_thread()  # (the tags went with the connection's JVM thread)
                else:
                    target.untag(self.tag)
            except Exception as err:
                log.debug("ending the Spark run on %s: %s", target.kind, err)
        if not op.cancel_requested:  # (a cancelled run is finished by its cancel)
            op.registry.finish(op, State.COMPLETED)


def begin_run(registry: Any, owner: dict[str, Any], policy: Any) -> Operation | None:
    """At a cell run's start: its ``spark`` operation, if a Spark entry point is live."""
    targets = entry_points()
    if not targets:
        return None
    op = registry.launch(
        lambda op: SparkJobs(targets, f"{TAG_PREFIX}{op.id}"),
        name="Spark jobs of this cell",
        kind="spark",
        policy=policy,
        owner=owner,
        quiet_for=1.0,
    )
    assert isinstance(op.runner, SparkJobs)
    op.runner.begin()
    return op


def end_run(op: Operation | None) -> None:
    if op is not None and isinstance(op.runner, SparkJobs):
        op.runner.end(op)


def library_errors() -> tuple[type[BaseException], ...]:
    """The errors a cancelled Spark call raises — py4j's (classic), pyspark's own (Spark
    Connect's ``OPERATION_CANCELED``…) — among the modules the user's code imported."""
    found = []
    for module, name in (("py4j.protocol", "Py4JError"), ("pyspark.errors", "PySparkException")):
        error = getattr(sys.modules.get(module), name, None)
        if isinstance(error, type) and issubclass(error, BaseException):
            found.append(error)
    return tuple(found)


def inside_py4j(frame: Any, depth: int = 12) -> bool:
    """Whether the interrupted ``frame`` (a signal handler's) is inside a py4j call."""
    while frame is not None and depth > 0:
        if str(frame.f_globals.get("__name__") or "").startswith("py4j."):
            return True
        frame, depth = frame.f_back, depth - 1
    return False
