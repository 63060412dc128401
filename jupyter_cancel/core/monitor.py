"""One thread that watches every process operation: output pipes and root exits.

Event-driven: a selector over the output pipes and the roots' pidfds (a worker thread
per root blocked in ``waitpid`` where pidfds are missing). Nothing polls.
"""

from __future__ import annotations

import codecs
import logging
import os
import selectors
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import Cancelled
from .fds import dup_high, pidfd_open, pipe
from .platform import current
from .proctree import running

if TYPE_CHECKING:
    from .operation import Operation
    from .runners import ProcessRunner

log = logging.getLogger(__name__)

_READ = 65536
ExitHandler = Callable[["Operation", int], None]


class _Watch:
    __slots__ = ("decoder", "op", "pidfd", "pipe", "runner")

    def __init__(self, op: Operation, runner: ProcessRunner) -> None:
        self.op = op
        self.runner = runner
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stdout = runner.popen.stdout
        self.pipe: int | None = stdout.fileno() if stdout is not None else None
        self.pidfd: int | None = None


class _Group:
    __slots__ = ("callback", "fds")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.fds: list[int] = []

    def fire(self) -> None:
        try:
            self.callback()
        except (Exception, Cancelled):  # one broken operation must not stop the monitor
            log.exception("exit callback %r failed", self.callback)


class Monitor:
    """Reads output into operations and reports each root's exit to ``on_exit``."""

    def __init__(self, on_exit: ExitHandler) -> None:
        self._on_exit = on_exit
        # poll(2) keeps no descriptor of its own (an epoll one would be opened on the user's
        # thread, maybe as a number the user closed and is about to reuse).
        self._sel: selectors.BaseSelector = (
            selectors.PollSelector() if hasattr(selectors, "PollSelector") else selectors.DefaultSelector()
        )
        self._wake_r, self._wake_w = pipe()
        os.set_blocking(self._wake_r, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._pending: list[_Watch] = []
        self._groups: list[_Group] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="jupyter_cancel-monitor", daemon=True)
        self._thread.start()

    def watch(self, op: Operation, runner: ProcessRunner) -> None:
        w = _Watch(op, runner)
        if w.pipe is not None:
            os.set_blocking(w.pipe, False)
        if current().pidfd:
            try:
                w.pidfd = pidfd_open(runner.popen.pid)
            except OSError:
                w.pidfd = None
        if w.pidfd is None:
            threading.Thread(target=self._wait_blocking, args=(w,), daemon=True).start()
        with self._lock:
            self._pending.append(w)
        os.write(self._wake_w, b"x")

    def on_exit_of(self, pids: list[int], callback: Callable[[], None], pinned: int | None = None) -> None:
        """Call ``callback()`` (on the monitor thread) once every pid has exited, without
        reaping any of them: their parents (the user's code) do that. ``pinned``: a pidfd of
        the only pid, already open (copied straight above the floor: this may be a background
        thread, and a pidfd opened here would take a low number for a moment)."""
        group = _Group(callback)
        if current().pidfd:
            if pinned is not None and len(pids) == 1:
                group.fds.append(dup_high(pinned))
                pids = []
            for pid in pids:
                try:
                    group.fds.append(pidfd_open(pid))
                except OSError:
                    continue  # gone already
        else:
            threading.Thread(target=self._wait_group_blocking, args=(group, pids), daemon=True).start()
            return
        with self._lock:
            self._groups.append(group)
        os.write(self._wake_w, b"x")

    def _wait_group_blocking(self, group: _Group, pids: list[int]) -> None:
        # No pidfds (macOS): psutil polls with backoff; a zombie counts as gone.
        import psutil

        procs = []
        for pid in pids:
            try:
                procs.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                continue
        while procs:
            _, procs = psutil.wait_procs(procs, timeout=1.0)
            procs = [p for p in procs if running(p)]
        with self._lock:
            self._groups.append(group)  # the loop calls it
        os.write(self._wake_w, b"x")

    def _wait_blocking(self, w: _Watch) -> None:
        w.runner.popen.wait()
        with self._lock:
            self._pending.append(w)  # re-queued: the loop sees it exited
        os.write(self._wake_w, b"x")

    def _run(self) -> None:
        while True:
            for key, _ in self._sel.select():
                if key.data is None:
                    self._drain_wake()
                    continue
                kind, w = key.data
                if kind == "group":
                    self._group_member_exited(key.fd, w)
                    continue
                try:
                    if kind == "pipe":
                        self._read(w)
                    else:
                        self._exited(w)
                except (Exception, Cancelled):  # one broken operation must not stop the monitor
                    log.exception("monitor failed on operation %s", w.op.id)

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            pending, self._pending = self._pending, []
            groups, self._groups = self._groups, []
        for group in groups:
            if not group.fds:
                group.fire()
            for fd in group.fds:
                self._sel.register(fd, selectors.EVENT_READ, ("group", group))
        for w in pending:
            if w.runner.popen.returncode is not None or (
                w.pidfd is None and w.runner.popen.poll() is not None
            ):
                self._exited(w)
                continue
            if w.pipe is not None:
                self._sel.register(w.pipe, selectors.EVENT_READ, ("pipe", w))
            if w.pidfd is not None:
                self._sel.register(w.pidfd, selectors.EVENT_READ, ("exit", w))

    def _group_member_exited(self, fd: int, group: _Group) -> None:
        self._sel.unregister(fd)
        os.close(fd)
        group.fds.remove(fd)
        if not group.fds:
            group.fire()

    def _read(self, w: _Watch, *, final: bool = False) -> None:
        while w.pipe is not None:
            try:
                data = os.read(w.pipe, _READ)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._close_pipe(w)
                return
            w.op.feed(w.decoder.decode(data))
            if not final:
                return  # one chunk per wake-up keeps other operations responsive

    def _close_pipe(self, w: _Watch) -> None:
        if w.pipe is None:
            return
        tail = w.decoder.decode(b"", final=True)
        if tail:
            w.op.feed(tail)
        try:
            self._sel.unregister(w.pipe)
        except (KeyError, ValueError):
            pass
        stdout = w.runner.popen.stdout
        if stdout is not None:
            stdout.close()
        w.pipe = None

    def _exited(self, w: _Watch) -> None:
        if w.pidfd is not None:
            try:
                self._sel.unregister(w.pidfd)
            except KeyError:
                pass  # reaped by a canceller before the loop ever registered it
            os.close(w.pidfd)
            w.pidfd = None
        returncode = w.runner.popen.poll()
        if returncode is None:  # pidfd readable means exited; reap for real
            returncode = w.runner.popen.wait()
        if w.pipe is not None:
            # Everything the root wrote is in the pipe buffer now; what leftovers write later is not its output.
            self._read(w, final=True)
            self._close_pipe(w)
        self._on_exit(w.op, returncode)
