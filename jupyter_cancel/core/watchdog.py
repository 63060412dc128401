"""The death watchdog process: it cleans up when its owner dies (the owner's end is
``watchdog_client.py``).

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
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

import psutil

from .cgroup import Cgroup
from .identity import process_of
from .model import DEFAULT_GRACE
from .platform import current
from .proctree import Snapshot, Termination, Tree

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


def _peer_pid(sock: socket.socket) -> int:
    """The pid of the process at the other end of a connected Unix socket."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[0])


def _root(pid: int | None, ctime: float | None) -> psutil.Process | None:
    return None if pid is None or ctime is None else process_of([pid, ctime])


def _owner_pidfd(owner: int | None) -> int | None:
    """A pidfd of the owner, if it is still our parent (else it is gone already)."""
    if owner is None or not current().pidfd:
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
    termination = Termination(trees).signal()  # every registered tree has its SIGTERM first
    late = None
    if prefix and current().proc:
        # The owner's work it had not registered yet: one pass over /proc for its cookies,
        # made once the registered trees are signalled (it must not delay them).
        late = threading.Thread(
            target=lambda: _end(Termination(_unregistered(prefix, set(registered))).signal())
        )
        late.start()
    _end(termination)
    if late is not None:
        late.join()


def _unregistered(prefix: str, registered: set[str]) -> list[Tree]:
    """Trees of the cookies under ``prefix`` that no registration named."""
    found = {key.decode(errors="replace") for key in Snapshot().cookie if key.startswith(prefix.encode())}
    return [
        Tree(op_id=op_id, root=None, grace=DEFAULT_GRACE, cgroup_complete=False)
        for op_id in found - registered
    ]


def _end(termination: Termination) -> None:
    """Wait out a signalled termination (escalating), then remove its trees' cgroups."""
    if not termination.trees:
        return
    outcome = termination.finish()
    for tree in termination.trees:
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
            _accept(listener, owners)
        for fd in readable:
            owner_ = owners.get(fd)
            if owner_ is not None and (fd == owner_.pidfd or not _read(owner_)):
                _gone(owner_, owners)


def _accept(listener: socket.socket, owners: dict[int, _Owner]) -> None:
    """A new owner: it learns our pid, we watch its socket and (where we can) its pidfd."""
    try:
        sock, _ = listener.accept()
    except OSError:
        return
    try:
        sock.sendall(f"{os.getpid()}\n".encode())
    except OSError:
        sock.close()
        return
    owner = _Owner(sock)
    owners[sock.fileno()] = owner
    if owner.pidfd is not None:
        owners[owner.pidfd] = owner
    log.debug("owner %d connected", owner.pid)


def _read(owner: _Owner) -> bool:
    """What the owner sent, fed to it; False once its socket is closed (the owner is gone)."""
    try:
        chunk = owner.sock.recv(65536)
    except OSError:
        chunk = b""
    if chunk:
        owner.feed(chunk)
    return bool(chunk)


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
