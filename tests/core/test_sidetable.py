"""The side thread: our background reads of /proc and cgroup files never take a descriptor
number of the process's table (where the user may be juggling 0, 1 and 2)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from jupyter_cancel.core.sidetable import side

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a private table needs Linux")


def _table() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


def test_what_the_side_thread_opens_is_not_in_the_process_table():
    worker = side()
    assert worker.private
    before = _table()
    fd = worker.call(os.open, "/proc/self/stat", os.O_RDONLY | os.O_CLOEXEC)
    try:
        assert _table() == before  # the process's table (the main thread's) did not gain it
        assert worker.call(lambda: os.read(fd, 64)).startswith(str(os.getpid()).encode())
    finally:
        worker.call(os.close, fd)


def test_the_side_thread_cannot_touch_the_users_descriptors():
    r, w = os.pipe()
    try:
        with pytest.raises(OSError):
            side().call(os.fstat, w)  # a descriptor made after the side thread left the table
    finally:
        os.close(r)
        os.close(w)


def test_a_low_number_the_user_freed_stays_free_while_the_side_thread_reads():
    """As CPython's test_subprocess does: close fd 0, expect the next pipe to get it."""
    code = textwrap.dedent(
        """
        import os, threading
        from jupyter_cancel.core.sidetable import side
        from jupyter_cancel.core.proctree import carriers_of
        worker = side()
        stop = threading.Event()
        def read_proc():
            while not stop.is_set():
                worker.call(carriers_of, {"x"}, 1)   # a /proc listing and many small reads
        t = threading.Thread(target=read_proc); t.start()
        bad = 0
        for _ in range(10000):
            os.close(0)
            r, w = os.pipe()
            bad += r != 0
            os.dup2(r, 0) if r != 0 else None
            os.close(w)
            if r != 0:
                os.close(r)
        stop.set(); t.join()
        print(bad)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "0", out.stderr


def test_a_pipe_made_before_the_side_thread_still_reaches_eof():
    """Its copy of the table is emptied as it starts: it holds no write end of the user's."""
    code = textwrap.dedent(
        """
        import os
        r, w = os.pipe()
        from jupyter_cancel.core.sidetable import side
        side().call(lambda: None)
        os.close(w)
        print(repr(os.read(r, 10)))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "b''", out.stderr


def test_a_forked_child_gets_its_own_side_thread():
    parent = side()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        ok = side() is not parent and side().call(os.getpid) == os.getpid()
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_failure_on_the_side_thread_is_the_callers():
    with pytest.raises(FileNotFoundError):
        side().call(os.open, "/nonexistent/jupyter_cancel", os.O_RDONLY)
    assert side().call(lambda: 42) == 42  # and the thread goes on
