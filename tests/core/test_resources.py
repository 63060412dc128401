"""What a tree costs (core.resources): counted from the real processes, no clock involved —
the busy member announces itself only once it has used its CPU time."""

from __future__ import annotations

import subprocess
import sys

import jupyter_cancel as jc
from jupyter_cancel.core.resources import Usage, describe
from tests.helpers.procs import wait_ready
from tests.helpers.wait import wait_gone

BURN = (
    "import os, sys, time, signal\n"
    "while time.process_time() < 0.2: pass\n"  # 0.2 s of CPU, then say so
    "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT)\n"
    "os.write(fd, f'{os.getpid()}\\n'.encode()); os.close(fd)\n"
    "signal.pause()\n"
)


def test_usage_counts_the_members_their_memory_and_cpu_seconds_kept_after_they_end(tmp_path):
    ready = tmp_path / "burn"
    op = jc.start([sys.executable, "-c", BURN, str(ready)], display=False)
    try:
        (pid,) = wait_ready(ready, 1)
        usage = Usage()
        first = usage.sample(op.pids())
    finally:
        op.cancel()
    # (the kernel counts CPU time in ticks: 0.2 s of process time may read 0.19)
    assert first["processes"] == 1 and first["rss"] > 1_000_000 and first["cpu_seconds"] >= 0.15
    assert first["peak_rss"] == first["rss"]
    assert describe(first).startswith("CPU ") and describe(first).endswith("1 process")
    assert wait_gone([pid]) == []
    after = usage.sample(op.pids())
    assert after["processes"] == 0 and after["rss"] == 0
    assert after["cpu_seconds"] >= 0.15 and after["peak_rss"] == first["peak_rss"]  # kept
    assert describe(after).startswith("peak ") and describe(after).endswith(" CPU s")


def test_usage_of_a_member_that_is_gone_or_never_was_is_skipped():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert Usage().sample([proc.pid, 2**22 + 12345])["processes"] == 0
