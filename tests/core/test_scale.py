"""At scale (behaviour only; the timing is bench/perf_floor.py's): a 300-process tree leaves
nothing, and cancelling 500 operations on a loaded machine never SIGKILLs a process that
honours SIGTERM (its grace runs from its own signal, not from the batch's start)."""

from __future__ import annotations

import logging
import subprocess
import sys

import jupyter_cancel as jc
from tests.helpers.procs import tree_cmd, wait_ready
from tests.helpers.wait import wait_gone


def test_a_300_process_tree_half_setsid_leaves_nothing(tmp_path, mechanism):
    op = jc.start(tree_cmd("wide300", tmp_path / "r"), display=False)
    pids = wait_ready(tmp_path / "r", 300, timeout=60)
    op.cancel()
    assert wait_gone(pids, timeout=10) == []
    assert op.state is jc.State.CANCELLED and op.unkillable == []


class _Warnings(logging.Handler):
    """The core's warnings (the suite runs with pytest's logging plugin off)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_cancel_all_of_500_beside_busy_loops_sends_no_sigkill(tmp_path):
    warnings = _Warnings()
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(4)]
    try:
        ops = [jc.start(["sleep", "600"], display=False, grace=1.0) for _ in range(500)]
        pids = [p for op in ops for p in op.pids()]
        assert len(pids) == 500
        logging.getLogger("jupyter_cancel").addHandler(warnings)
        try:
            cancelled = jc.cancel_all()
        finally:
            logging.getLogger("jupyter_cancel").removeHandler(warnings)
        assert len(cancelled) == 500
        assert wait_gone(pids, timeout=30) == []
        killed = [m for m in warnings.messages if "outlived its grace" in m]
        assert killed == [], f"{len(killed)} SIGTERM-honouring processes got SIGKILL: {killed[:3]}"
        assert {op.state for op in ops} == {jc.State.CANCELLED}
    finally:
        for p in loops:
            p.kill()
            p.wait()


def test_a_zombie_member_counts_as_gone_without_sigkill(tmp_path, mechanism):
    """A member that already exited but is not reaped yet (a reparented zombie that its new
    parent reaps lazily) holds nothing: the cancel neither waits out the grace for it nor
    SIGKILLs it — with pidfds, and in the psutil fallback (macOS)."""
    warnings = _Warnings()
    op = jc.start(tree_cmd("zombie", tmp_path / "z"), display=False, grace=30)
    root, zombie = wait_ready(tmp_path / "z", 2)
    logging.getLogger("jupyter_cancel").addHandler(warnings)
    try:
        op.cancel()
    finally:
        logging.getLogger("jupyter_cancel").removeHandler(warnings)
    assert op.state is jc.State.CANCELLED and op.unkillable == []
    assert [m for m in warnings.messages if "outlived its grace" in m] == []
    assert wait_gone([root, zombie], timeout=10) == []
