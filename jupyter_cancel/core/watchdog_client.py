"""The owner's end of the death watchdog (``watchdog.py`` is the watchdog process itself).

``WatchdogClient`` starts or connects to a watchdog and sends it one JSON line per registered
tree (``register``/``forget``, and the owner's cookie prefix as ``sweep``); ``start_shared``
starts the one watchdog a Jupyter server shares among its kernels. When the owner dies the
watchdog reads EOF and ends every tree still registered.
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from .fds import pidfd_open
from .operation import death_prefix
from .platform import current
from .proctree import COOKIE
from .watchdog import DETACH_ENV, SOCKET_ENV, SWEEP_ENV

if TYPE_CHECKING:
    from .operation import Operation
    from .runners import TreeRunner

log = logging.getLogger(__name__)

__all__ = ["SOCKET_ENV", "WatchdogClient", "detach", "start_shared"]

#: A detached watchdog's first step, before any import: pin the owner (a pidfd, while it is
#: still our parent), fork, and say the watchdog's pid from the child; the parent exits at
#: once. Then the watchdog proper runs in that child. Python's start-up is all it costs the
#: owner (a few ms), so the first registration already goes to a watchdog its owner's death
#: cannot take with it.
_DETACH_BOOT = """
import os, sys
owner = int(sys.argv[1])
try:
    fd = os.pidfd_open(owner)
    if os.getppid() != owner:
        os.close(fd)
        fd = -1
except OSError:
    fd = -1
if os.fork() > 0:
    os._exit(0)
os.write(1, b"%d\\n" % os.getpid())
sys.argv = [sys.argv[0], str(owner), "--pinned", str(fd)]
import runpy
runpy.run_module("jupyter_cancel.core.watchdog", run_name="__main__", alter_sys=True)
"""


def detach() -> bool:
    """Whether to start the watchdog detached: forked once more, so that it is not a direct child
    of its owner. Ray kills a dying worker's direct children first (``ray.cancel(force=True)``):
    a child watchdog would die with its owner and leave the trees' setsid members alive. Needs
    pidfds (the owner watches a process that is not its child)."""
    wanted = os.environ.get(DETACH_ENV, "1" if "RAY_RAYLET_PID" in os.environ else "0") == "1"
    return wanted and current().pidfd


class WatchdogClient:
    """The owner's end: ``register``/``forget`` lines, ``close`` for a clean exit."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes] | None,
        on_lost: Callable[[WatchdogClient], None] | None = None,
        sock: socket.socket | None = None,
        detached: bool = False,
    ) -> None:
        self.proc = proc
        self.sock = sock
        #: ``proc`` only forked the watchdog and exits: the watchdog says its pid (see ``detach``).
        self.detached = detached
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._closing = False
        self._lost = False
        #: The shared watchdog says its pid first thing on a connection (SO_PEERCRED would name
        #: the server, which listens for it, so that no kernel finds it not yet listening).
        self._pid: int | None = None
        self._pid_known = threading.Event()
        if sock is not None:
            self._pipe: IO[bytes] | None = sock.makefile("wb")
        else:
            assert proc is not None and proc.stdin is not None
            if not detached:
                self._pid = proc.pid
                self._pid_known.set()
            self._pipe = proc.stdin
        # Work not registered yet (a captured process in its first milliseconds) is found by
        # its cookie: every cookie of the owner's non-detach work starts with this prefix.
        self._send({"sweep": death_prefix()})
        if detached and on_lost is None:
            threading.Thread(
                target=self._read_detached, name="jupyter_cancel-watchdog-pid", daemon=True
            ).start()
        if on_lost is not None:
            # Blocked in waitpid until the watchdog exits (no polling): a watchdog that dies
            # while its owner lives (SIGKILLed, OOM) is replaced and given the live trees again.
            threading.Thread(
                target=self._guard, args=(on_lost,), name="jupyter_cancel-watchdog-guard", daemon=True
            ).start()

    @property
    def pid(self) -> int | None:
        self._pid_known.wait(2.0)
        return self._pid

    def _read_pid(self) -> None:
        assert self.sock is not None
        line = b""
        while not line.endswith(b"\n"):
            chunk = self.sock.recv(64 - len(line))
            if not chunk:
                break
            line += chunk
        if line.strip().isdigit():
            self._pid = int(line)
        self._pid_known.set()

    def _read_detached(self) -> None:
        """The detached watchdog's lines, its pid then ``ready``; the forking parent reaped."""
        assert self.proc is not None and self.proc.stdout is not None
        try:
            line = self.proc.stdout.readline().strip()
            if line.isdigit():
                self._pid = int(line)
        except (OSError, ValueError):
            pass
        finally:
            self._pid_known.set()
            self.proc.wait()  # the fork's parent: it exits at once
        try:
            if self.proc.stdout.readline().strip() == b"ready":
                self._ready.set()
        except (OSError, ValueError):
            pass

    def _wait_detached(self, timeout: float | None = None) -> bool:
        """Block until the detached watchdog exited (its pidfd; ``timeout``); True if it did."""
        if self._pid is None:
            return True
        try:
            fd = pidfd_open(self._pid)
        except ProcessLookupError:
            return True
        try:
            return bool(select.select([fd], [], [], timeout)[0])
        finally:
            os.close(fd)

    def _guard(self, on_lost: Callable[[WatchdogClient], None]) -> None:
        try:
            if self.detached:
                self._read_detached()
                self._wait_detached()  # blocks until it exits (not our child: no waitpid)
            elif self.sock is not None:
                self._read_pid()
                while self.sock.recv(4096):  # after its pid it never writes: b"" is its end
                    pass
            else:
                assert self.proc is not None
                self.proc.wait()
        except Exception:  # ECHILD: someone else reaped it; it is gone all the same
            log.debug("waiting on watchdog %d failed", self.pid, exc_info=True)
        self._lost = True
        if self._closing:
            return
        log.warning("watchdog %d exited while its owner lives: starting another", self.pid)
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
        if self.proc is not None and not self.detached:
            return self._pipe is not None and self.proc.poll() is None
        return self._pipe is not None and not self._lost

    @classmethod
    def open(cls, on_lost: Callable[[WatchdogClient], None] | None = None) -> WatchdogClient:
        """The server's shared watchdog if there is one to connect to, else a watchdog of our own."""
        path = os.environ.get(SOCKET_ENV)
        if path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
                log.debug("connected to the shared watchdog at %s", path)
                return cls(None, on_lost, sock=sock)
            except OSError:
                sock.close()
                log.debug("no shared watchdog at %s: starting our own", path)
        return cls.start(on_lost)

    @classmethod
    def start(cls, on_lost: Callable[[WatchdogClient], None] | None = None) -> WatchdogClient:
        env = {k: v for k, v in os.environ.items() if k != COOKIE}
        env[SWEEP_ENV] = death_prefix()  # known from its first instant: an owner killed at once is covered
        detached = detach()
        proc = subprocess.Popen(
            [sys.executable, "-c", _DETACH_BOOT, str(os.getpid())]
            if detached
            else [sys.executable, "-m", "jupyter_cancel.core.watchdog", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None if os.environ.get("JUPYTER_CANCEL_WATCHDOG_DEBUG") else subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
            env=env,
        )
        log.debug("watchdog %d started%s", proc.pid, " (detached)" if detached else "")
        client = cls(proc, on_lost, detached=detached)
        if detached and not client._pid_known.wait(10):
            log.warning("the detached watchdog did not say its pid")
        return client

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Block until the watchdog has started (imports done); True if it said so in time."""
        if self.proc is None:
            return self.alive  # connected: the shared watchdog is up
        if self.detached:
            return self._ready.wait(timeout)
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
                log.warning("watchdog %d is gone: kernel death will not be cleaned up", self.pid)
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
        if self.sock is not None:
            self.sock.close()
            return
        assert self.proc is not None
        if self.detached:
            self._pid_known.wait(5)
            if not self._wait_detached(5):
                log.warning("watchdog %s did not exit", self._pid)
            return
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.warning("watchdog %d did not exit", self.proc.pid)


def start_shared(path: str) -> subprocess.Popen[bytes]:
    """Start a shared watchdog listening at ``path`` (a Unix socket, owner-only), for the
    processes of this one (a server's kernels); ``SOCKET_ENV`` tells them where it is."""
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        listener.bind(path)
    finally:
        os.umask(old)
    listener.listen(128)  # before it starts: a kernel connecting early waits in the backlog
    env = {k: v for k, v in os.environ.items() if k not in (COOKIE, SOCKET_ENV)}
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter_cancel.core.watchdog",
                "--serve",
                str(listener.fileno()),
                str(os.getpid()),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=None if os.environ.get("JUPYTER_CANCEL_WATCHDOG_DEBUG") else subprocess.DEVNULL,
            start_new_session=True,
            pass_fds=(listener.fileno(),),
            env=env,
        )
    finally:
        listener.close()  # the watchdog has its own copy
    # Reaped as soon as it leaves, whoever holds the Popen by then.
    threading.Thread(target=proc.wait, name="jupyter_cancel-shared-watchdog", daemon=True).start()
    return proc
