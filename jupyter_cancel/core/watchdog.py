"""The death watchdog: a small process per owner that cleans up when the owner dies.

The owner (a kernel, a script) holds the write end of a pipe to the watchdog's stdin and
sends one JSON line per registration. When the pipe reaches EOF (the owner died, however:
SIGKILL and OOM included) the watchdog terminates every tree still registered, then exits.
It blocks in ``read``: no polling. It runs in its own session, so signals sent to the
owner's process group do not reach it.

Run as ``python -m jupyter_cancel.core.watchdog <owner pid>``.

**Shared** (``--serve <fd>``): one watchdog for every kernel a Jupyter server starts, instead
of a Python process per kernel (~23 MiB each). The server hands it a listening Unix socket
and tells its kernels where it is (``JUPYTER_CANCEL_WATCHDOG_SOCKET``); each kernel connects
and sends the same lines. The owner is the connecting process (``SO_PEERCRED``), pinned by a
pidfd at once; its connection's EOF or its pidfd ends its trees, in a thread of their own so
other owners are still watched. A kernel that cannot connect starts its own watchdog, as a
process outside a server does. The shared watchdog leaves when its server is gone (or asks
it to, with SIGTERM) and no owner is connected any more.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any

import psutil

from .cgroup import Cgroup
from .fds import pidfd_open
from .identity import process_of
from .model import DEFAULT_GRACE
from .operation import death_prefix
from .proctree import COOKIE, HAVE_PROC, Snapshot, Tree, terminate

if TYPE_CHECKING:
    from .operation import Operation
    from .runners import TreeRunner

log = logging.getLogger(__name__)
#: Where a server's shared watchdog listens (set in the environment of the kernels it starts).
SOCKET_ENV = "JUPYTER_CANCEL_WATCHDOG_SOCKET"
#: The key of the owner's cookie prefix among its registrations (no operation id has a space).
SWEEP = " sweep"
#: The same prefix, given to a watchdog of our own at its start.
SWEEP_ENV = "JUPYTER_CANCEL_WATCHDOG_SWEEP"
#: ``1``: the owner's watchdog is not its child (see ``detach``); set where a supervisor kills
#: a dying worker's direct children (Ray's workers are detected by ``RAY_RAYLET_PID``).
DETACH_ENV = "JUPYTER_CANCEL_WATCHDOG_DETACH"


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
    return wanted and hasattr(os, "pidfd_open")


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


def _peer_pid(sock: socket.socket) -> int:
    """The pid of the process at the other end of a connected Unix socket."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[0])


def _root(pid: int | None, ctime: float | None) -> psutil.Process | None:
    return None if pid is None or ctime is None else process_of([pid, ctime])


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


def _lines(stream: IO[bytes], owner: int | None, pidfd: int | None = None) -> Iterator[bytes]:
    """Registration lines until the owner is gone: pipe EOF, or (sooner, on Linux) the
    owner's pidfd turning readable. A dying process closes its files only after its whole
    address space is torn down (~70 ms for a kernel here); the pidfd says so first.
    (``pidfd``: pinned already, before a detaching fork made the owner not our parent.)"""
    if pidfd is None:
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


def _apply(registered: dict[str, dict[str, Any]], raw: bytes) -> None:
    try:
        message = json.loads(raw)
    except ValueError:
        return
    if not isinstance(message, dict):
        return
    if "register" in message:
        registered[str(message["register"])] = message
    elif "sweep" in message:
        registered[SWEEP] = {"sweep": str(message["sweep"])}
    elif "forget" in message:
        registered.pop(str(message["forget"]), None)


def main(stream: IO[bytes], owner: int | None = None, pidfd: int | None = None) -> int:
    """Read registrations until the owner is gone, then terminate what is still registered."""
    registered: dict[str, dict[str, Any]] = {}
    if os.environ.get(SWEEP_ENV):
        registered[SWEEP] = {"sweep": os.environ[SWEEP_ENV]}
    for raw in _lines(stream, owner, pidfd):
        _apply(registered, raw)
    log.debug("owner gone at %.6f", time.time())
    _terminate(registered)
    return 0


def _terminate(registered: dict[str, dict[str, Any]]) -> None:
    prefix = registered.pop(SWEEP, {}).get("sweep")
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
    if prefix and HAVE_PROC:
        # The owner's work it had not registered yet: one pass over /proc for its cookies.
        unregistered = {
            key.decode(errors="replace")
            for key in Snapshot().cookie
            if key.startswith(prefix.encode()) and key.decode(errors="replace") not in registered
        }
        trees += [
            Tree(op_id=op_id, root=None, grace=DEFAULT_GRACE, cgroup_complete=False) for op_id in unregistered
        ]
    if trees:
        outcome = terminate(trees)
        for tree in trees:
            if tree.cgroup is not None:
                tree.cgroup.remove()
        log.info("owner gone: terminated %s", {k: v for k, v in outcome.gone.items() if v})


class _Owner:
    """One connected owner of the shared watchdog."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pid = _peer_pid(sock)
        self.pidfd: int | None = None
        try:
            self.pidfd = os.pidfd_open(self.pid)  # connected, so alive (or its pid not reused yet)
        except OSError:
            pass
        self.buffer = b""
        self.registered: dict[str, dict[str, Any]] = {}

    def feed(self, chunk: bytes) -> None:
        *complete, self.buffer = (self.buffer + chunk).split(b"\n")
        for raw in complete:
            _apply(self.registered, raw)

    def drain(self) -> None:
        """The owner is gone: take what it wrote before it went."""
        self.sock.setblocking(False)
        try:
            while chunk := self.sock.recv(65536):
                self.feed(chunk)
        except OSError:
            pass
        if self.buffer:
            self.feed(b"\n")


def serve(listener: socket.socket, parent: int | None) -> int:
    """The shared watchdog: owners connect to ``listener``; each one's trees are terminated
    when it is gone. Returns once ``parent`` is gone (or SIGTERM came) and no owner is left."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    parent_fd = _owner_pidfd(parent)
    owners: dict[int, _Owner] = {}  # by socket fd and by pidfd
    while True:
        if stopping.is_set() and listener.fileno() >= 0:
            listener.close()  # no new owners
        if listener.fileno() < 0 and not owners:
            return 0
        fds = [wake_r, *owners]
        if listener.fileno() >= 0:
            fds.append(listener.fileno())
        if parent_fd is not None:
            fds.append(parent_fd)
        readable, _, _ = select.select(fds, [], [])
        if wake_r in readable:
            os.read(wake_r, 512)
        if parent_fd is not None and parent_fd in readable:
            os.close(parent_fd)
            parent_fd = None
            stopping.set()  # the server is gone: no new kernels will come
        if listener.fileno() >= 0 and listener.fileno() in readable:
            try:
                sock, _ = listener.accept()
            except OSError:
                continue
            try:
                sock.sendall(f"{os.getpid()}\n".encode())
            except OSError:
                sock.close()
                continue
            owner = _Owner(sock)
            owners[sock.fileno()] = owner
            if owner.pidfd is not None:
                owners[owner.pidfd] = owner
            log.debug("owner %d connected", owner.pid)
        for fd in readable:
            owner_ = owners.get(fd)
            if owner_ is None:
                continue
            gone = fd == owner_.pidfd
            if not gone:
                try:
                    chunk = owner_.sock.recv(65536)
                except OSError:
                    chunk = b""
                gone = not chunk
                if chunk:
                    owner_.feed(chunk)
            if gone:
                _gone(owner_, owners)


def _gone(owner: _Owner, owners: dict[int, _Owner]) -> None:
    owner.drain()
    log.debug("owner %d gone at %.6f", owner.pid, time.time())
    for fd in [fd for fd, o in owners.items() if o is owner]:
        del owners[fd]
    owner.sock.close()
    if owner.pidfd is not None:
        os.close(owner.pidfd)
    if owner.registered:
        threading.Thread(target=_terminate, args=(owner.registered,), daemon=False).start()


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


if __name__ == "__main__":
    # JUPYTER_CANCEL_WATCHDOG_DEBUG=<file>: a timestamped log of what the watchdog did.
    debug = os.environ.get("JUPYTER_CANCEL_WATCHDOG_DEBUG")
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        filename=debug if debug and debug != "1" else None,
        format="%(created).6f jupyter_cancel watchdog: %(message)s",
    )
    if sys.argv[1:2] == ["--serve"]:
        sock = socket.socket(fileno=int(sys.argv[2]))
        sys.exit(serve(sock, int(sys.argv[3])))
    owner = int(sys.argv[1]) if len(sys.argv) > 1 else None
    # Detached (see _DETACH_BOOT): the owner pinned by the boot step, before it forked.
    owner_fd = int(sys.argv[3]) if sys.argv[2:3] == ["--pinned"] and int(sys.argv[3]) >= 0 else None
    try:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
    except OSError:
        pass  # the owner died before we were up: clean up all the same
    finally:
        os.close(1)  # nothing more to say: a dead reader must not break us later
    sys.exit(main(sys.stdin.buffer, owner, owner_fd))
