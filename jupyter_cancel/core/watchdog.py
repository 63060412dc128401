"""The death watchdog: a small process per owner that cleans up when the owner dies.

The owner (a kernel, a script) holds the write end of a pipe to the watchdog's stdin and
sends one JSON line per registration. When the pipe reaches EOF (the owner died, however:
SIGKILL and OOM included) the watchdog terminates every tree still registered, then exits.
It blocks in ``read``: no polling. It runs in its own session, so signals sent to the
owner's process group do not reach it.

Run as ``python -m jupyter_cancel.core.watchdog``.
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any

import psutil

from .cgroup import Cgroup
from .proctree import COOKIE, Tree, terminate

if TYPE_CHECKING:
    from .operation import Operation
    from .runners import TreeRunner

log = logging.getLogger(__name__)
_CTIME_TOLERANCE = 0.005


class WatchdogClient:
    """The owner's end: ``register``/``forget`` lines, ``close`` for a clean exit."""

    def __init__(
        self, proc: subprocess.Popen[bytes], on_lost: Callable[[WatchdogClient], None] | None = None
    ) -> None:
        self.proc = proc
        self._lock = threading.Lock()
        assert proc.stdin is not None
        self._pipe: IO[bytes] | None = proc.stdin
        self._closing = False
        if on_lost is not None:
            # Blocked in waitpid until the watchdog exits (no polling): a watchdog that dies
            # while its owner lives (SIGKILLed, OOM) is replaced and given the live trees again.
            threading.Thread(
                target=self._guard, args=(on_lost,), name="jupyter_cancel-watchdog-guard", daemon=True
            ).start()

    def _guard(self, on_lost: Callable[[WatchdogClient], None]) -> None:
        try:
            self.proc.wait()
        except Exception:  # ECHILD: someone else reaped it; it is gone all the same
            log.debug("waiting on watchdog %d failed", self.proc.pid, exc_info=True)
        if self._closing:
            return
        log.warning(
            "watchdog %d exited (%s) while its owner lives: restarting it",
            self.proc.pid,
            self.proc.returncode,
        )
        self._close_pipe()
        on_lost(self)

    def _close_pipe(self) -> None:
        with self._lock:
            pipe, self._pipe = self._pipe, None
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass

    @property
    def alive(self) -> bool:
        return self._pipe is not None and self.proc.poll() is None

    @classmethod
    def start(cls, on_lost: Callable[[WatchdogClient], None] | None = None) -> WatchdogClient:
        env = {k: v for k, v in os.environ.items() if k != COOKIE}
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_cancel.core.watchdog", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None if os.environ.get("JUPYTER_CANCEL_WATCHDOG_DEBUG") else subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
            env=env,
        )
        log.debug("watchdog %d started", proc.pid)
        return cls(proc, on_lost)

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Block until the watchdog has started (imports done); True if it said so in time."""
        import select

        out = self.proc.stdout
        assert out is not None
        readable, _, _ = select.select([out], [], [], timeout)
        return bool(readable) and out.readline().strip() == b"ready"

    def _send(self, message: dict[str, Any]) -> None:
        line = (json.dumps(message) + "\n").encode()
        with self._lock:
            if self._pipe is None:
                return
            try:
                self._pipe.write(line)
                self._pipe.flush()
            except (BrokenPipeError, ValueError):
                log.warning("watchdog %d is gone: kernel death will not be cleaned up", self.proc.pid)
                self._pipe = None

    def register(self, op: Operation, runner: TreeRunner) -> None:
        root = runner.tree.root
        self._send(
            {
                "register": op.id,
                "pid": root.pid if root is not None else None,
                "ctime": root.create_time() if root is not None else None,
                "grace": op.grace,
                "cgroup": runner.cgroup.path if runner.cgroup is not None else None,
                "cgroup_complete": runner.tree.cgroup_complete,
            }
        )

    def forget(self, op_id: str) -> None:
        self._send({"forget": op_id})

    def close(self) -> None:
        """Owner exits cleanly: the watchdog sees EOF, cleans what is left, and exits."""
        self._closing = True
        self._close_pipe()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.warning("watchdog %d did not exit", self.proc.pid)


def _root(pid: int | None, ctime: float | None) -> psutil.Process | None:
    if pid is None or ctime is None:
        return None
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - ctime) > _CTIME_TOLERANCE:
            return None  # the pid was reused: never signal a stranger
        return proc
    except psutil.NoSuchProcess:
        return None


def _owner_pidfd(owner: int | None) -> int | None:
    """A pidfd of the owner, if it is still our parent (else it is gone already)."""
    if owner is None or not hasattr(os, "pidfd_open"):
        return None
    try:
        fd = os.pidfd_open(owner)
    except OSError:
        return None
    if os.getppid() != owner:  # the owner died before we pinned it: the pid may be reused
        os.close(fd)
        return None
    return fd


def _lines(stream: IO[bytes], owner: int | None) -> Iterator[bytes]:
    """Registration lines until the owner is gone: pipe EOF, or (sooner, on Linux) the
    owner's pidfd turning readable. A dying process closes its files only after its whole
    address space is torn down (~70 ms for a kernel here); the pidfd says so first."""
    pidfd = _owner_pidfd(owner)
    log.debug("watching owner %s (pidfd %s, parent %d)", owner, pidfd, os.getppid())
    if pidfd is None:
        yield from stream
        return
    fd = stream.fileno()
    buffer = b""
    open_ = True
    while open_:
        readable, _, _ = select.select([fd, pidfd], [], [])  # blocks: no polling
        if pidfd in readable:
            os.set_blocking(fd, False)  # owner gone: take what it wrote, then stop
            open_ = False
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                open_ = False
                break
            buffer += chunk
            if open_:
                break
        *complete, buffer = buffer.split(b"\n")
        yield from complete
    if buffer:
        yield buffer
    os.close(pidfd)


def main(stream: IO[bytes], owner: int | None = None) -> int:
    """Read registrations until the owner is gone, then terminate what is still registered."""
    registered: dict[str, dict[str, Any]] = {}
    for raw in _lines(stream, owner):
        try:
            message = json.loads(raw)
        except ValueError:
            continue
        if "register" in message:
            registered[str(message["register"])] = message
        elif "forget" in message:
            registered.pop(str(message["forget"]), None)
    log.debug("owner gone at %.6f", time.time())
    trees = [
        Tree(
            op_id=op_id,
            root=_root(m.get("pid"), m.get("ctime")),
            grace=float(m.get("grace") or 0),
            cgroup=Cgroup(m["cgroup"]) if m.get("cgroup") else None,
            cgroup_complete=bool(m.get("cgroup_complete", True)),
        )
        for op_id, m in registered.items()
    ]
    if trees:
        outcome = terminate(trees)
        for tree in trees:
            if tree.cgroup is not None:
                tree.cgroup.remove()
        log.info("owner gone: terminated %s", {k: v for k, v in outcome.gone.items() if v})
    return 0


if __name__ == "__main__":
    # JUPYTER_CANCEL_WATCHDOG_DEBUG=<file>: a timestamped log of what the watchdog did.
    debug = os.environ.get("JUPYTER_CANCEL_WATCHDOG_DEBUG")
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        filename=debug if debug and debug != "1" else None,
        format="%(created).6f jupyter_cancel watchdog: %(message)s",
    )
    try:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
    except OSError:
        pass  # the owner died before we were up: clean up all the same
    finally:
        os.close(1)  # nothing more to say: a dead reader must not break us later
    sys.exit(main(sys.stdin.buffer, int(sys.argv[1]) if len(sys.argv) > 1 else None))
