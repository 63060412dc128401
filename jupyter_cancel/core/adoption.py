"""Adoption: a captured child between its spawn and its watching.

Most processes a kernel starts end within milliseconds. A captured child is therefore only
expected at its spawn; one tick ``ADOPT_AFTER`` later (one timer wake-up for every spawn of
the window) ends those that exited — after one ``/proc`` listing for a ``cmd &`` they left —
and hands the others to the registry's monitor (spawns of the window's last moment wait for
the next tick); a cgroup only for what lives ``CGROUP_AFTER``.
A trigger meanwhile adopts its operations at once (``now_among``).

The registry owns the operations; this module only decides when a child is watched, and
reports through the callbacks it was given (no reference back to the registry).
"""

from __future__ import annotations

import logging
import os
import shlex
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .cgroup import Cgroup
from .fds import pidfd_open
from .model import State
from .operation import Operation
from .platform import current
from .proctree import Tree, carriers_of, carriers_since, handed_out_only, newest_pid, running
from .runners import CapturedRunner, TreeRunner, exit_status, root_identity
from .sidetable import side

log = logging.getLogger(__name__)

#: Captured processes are watched (monitor, watchdog record) once they lived this long...
ADOPT_AFTER = 0.02
#: How long a cancel waits for an adoption in flight (a few /proc reads: milliseconds).
ADOPT_WAIT = 2.0
#: ... and moved into a cgroup of their own once they lived this long.
CGROUP_AFTER = 0.5
#: A tick spares its /proc listing when every pid handed out since its batch's first spawn
#: is a spawn of ours — for a batch this young at most (the pid counter cannot go round).
KNOWN_SPAN = 0.1

_RUNNING = object()


class Expected:
    """A captured spawn that is not an operation yet: what its operation will be. Most
    processes a kernel starts end within milliseconds, and making, registering and ending an
    operation on the spawning thread, right after a ``fork``, cost it more than all the rest of
    the capture (its caches cold). So the operation is made later, in a batch: by the tick, or
    first by anything that reads the registry (a trigger, a listing: ``Adoptions.claim``)."""

    __slots__ = (
        "argv",
        "born",
        "ended",
        "op",
        "op_id",
        "owner",
        "pid",
        "policy",
        "popen",
        "started",
        "status",
    )

    def __init__(self, op_id: str, argv: Any, policy: Any, owner: Mapping[str, Any]) -> None:
        self.op_id = op_id
        self.argv = argv
        self.policy = policy
        self.owner = owner
        self.started = time.time()
        #: When it was spawned, on the clock the tick reads its age by.
        self.born = time.monotonic()
        #: Its operation, once made.
        self.op: Operation | None = None
        #: Its child, once spawned (a ``Popen``'s: never pinned, see ``Adoptions.defer``); its
        #: ``Popen`` (a weak reference) from the start, where it has one.
        self.pid = 0
        self.popen: Any = None
        #: Its end, when the tick found it over with nothing left (``Adoptions.record``): its
        #: exit status and when. Its operation is then made only if someone reads the history.
        self.status: Any = None
        self.ended = 0.0

    def name(self) -> str:
        """Its command line as the operation's name (``Popen`` takes a sequence, a string or a path)."""
        argv = self.argv
        if isinstance(argv, list | tuple):
            return shlex.join(str(a) for a in argv)[:200] if argv else "process"
        return (os.fsdecode(argv) if isinstance(argv, bytes | os.PathLike) else str(argv))[:200]


class _Deferred:
    """A captured child not yet watched: pinned by its pidfd, or a ``Popen``'s (see ``defer``)."""

    __slots__ = ("_popen", "_status", "born", "cgroup", "fd", "op", "pid")

    def __init__(
        self, op: Operation, pid: int, fd: int | None, popen: Any, cgroup: bool, born: float | None = None
    ) -> None:
        self.op = op
        self.pid = pid
        #: When it was spawned (``time.monotonic``): the tick settles it once it is ``ADOPT_AFTER`` old.
        self.born = time.monotonic() if born is None else born
        #: Our pidfd of the child (None: not pinned); closed by ``close`` alone.
        self.fd = fd
        self._popen = weakref.ref(popen) if popen is not None else None
        self.cgroup = cgroup
        #: Its exit status once read (it cannot change after).
        self._status: Any = _RUNNING

    def popen(self) -> Any:
        return self._popen() if self._popen is not None else None

    def exited(self) -> bool:
        return self.status(running=_RUNNING) is not _RUNNING

    def status(self, running: Any = None) -> Any:
        """Its exit status without reaping it (None if its caller reaped it and kept none;
        ``running`` while it runs); read once, kept once final (see ``_status_of``)."""
        if self._status is _RUNNING:
            status, final = _status_of(self.pid, self.fd, self.popen())
            if not final:
                return running if status is _RUNNING else status
            self._status = status
        return self._status

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _status_of(pid: int, fd: int | None, popen: Any) -> tuple[Any, bool]:
    """A child's exit status without reaping it, and whether that status is final: its
    ``Popen``'s returncode once that reaped it (no system call: the common case), else one
    ``waitid`` (on its pidfd, if pinned). ``_RUNNING`` while it runs; None if its caller
    reaped it and kept no status."""
    if popen is not None and popen.returncode is not None:
        return popen.returncode, True
    try:
        if fd is not None:
            info = os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        else:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped: by its Popen (whose returncode may be a moment
        if popen is not None:  # behind its reaping: not final), or by its dropped Popen
            return popen.returncode, False
        return None, True  # (reaped, its status gone with its Popen: that cannot change)
    if info is None:
        return _RUNNING, False
    return exit_status(info), True


def _forked(expected: Expected) -> int:
    """The pid of an expected spawn's child once forked, before ``spawned`` tells it (a
    ``Popen`` being made knows it then); 0 if unknown."""
    popen = expected.popen() if expected.popen is not None else None
    pid = getattr(popen, "pid", None)
    return pid if isinstance(pid, int) else 0


class Adoptions:
    """The captured children not yet watched, and the tick that settles them."""

    def __init__(
        self,
        lock: threading.RLock,
        *,
        later: Callable[[float, Callable[[], None]], None],
        attach: Callable[[Operation, TreeRunner, int | None], None],
        ended: Callable[[Operation, Any], None],
        release: Callable[[TreeRunner], None],
        watch: Callable[[Operation, TreeRunner], None],
        new: Callable[..., Operation] | None = None,
        register: Callable[..., bool] | None = None,
        record: Callable[[Expected], bool] | None = None,
    ) -> None:
        #: The registry's lock (an operation's end drops its entry under it).
        self._lock = lock
        self._later = later
        self._attach = attach
        self._ended = ended
        self._release = release
        self._watch = watch
        #: The registry's verbs that make an ``Expected``'s operation.
        self._new = new
        self._register = register
        #: The registry's record of an expected spawn's end, its operation not made (None: made).
        self._recorder = record
        #: Captured spawns that are not operations yet (``expect``), by operation id.
        self.expected: dict[str, Expected] = {}
        #: Children not yet watched (by operation id), and whether a tick to settle them is scheduled.
        self.pending: dict[str, _Deferred] = {}
        self._tick = False
        #: Operations the tick is adopting right now (out of ``pending``, not yet attached):
        #: a cancel waits for that (``ADOPT_WAIT``) instead of ending an operation without a runner.
        self._adopting: dict[str, tuple[threading.Event, int]] = {}

    def defer(self, op: Operation, pid: int, popen: Any, cgroup: bool) -> bool:
        """Watch ``pid`` only if it lives ``ADOPT_AFTER``; False if it cannot wait (adopt now).

        A ``Popen``'s child is not even pinned meanwhile: this process is its parent, so its
        pid stays its own until reaped, and only its ``Popen`` reaps it (whose returncode then
        says so; a ``waitid`` names only our own unreaped children). A child of another route
        (``fork``, ``posix_spawn``) is pinned now by a pidfd."""
        if popen is not None and hasattr(os, "waitid"):
            self._add(_Deferred(op, pid, None, popen, cgroup))
            return True
        if not current().pidfd:
            return False
        try:
            fd = pidfd_open(pid)
        except OSError:
            return False  # gone and reaped already: adopting it now finds that
        self._add(_Deferred(op, pid, fd, popen, cgroup))
        return True

    def expect(self, expected: Expected) -> None:
        """A spawn is about to happen (before its child exists): until its operation is made,
        a trigger or a listing makes it first (``claim``), so nothing misses it."""
        with self._lock:
            self.expected[expected.op_id] = expected

    def spawned(self, expected: Expected, pid: int, popen: Any) -> Operation | None:
        """Its child exists. None: it stays an ``Expected`` until the tick (a ``Popen``'s child,
        see ``defer``); else its operation, to adopt as any other (made meanwhile by a
        ``claim``, or a child of another route, pinned at once)."""
        with self._lock:
            if expected.op is None and popen is not None and hasattr(os, "waitid"):
                expected.pid, expected.popen = pid, weakref.ref(popen)
                tick = not self._tick
                self._tick = True
            else:
                self.expected.pop(expected.op_id, None)
                return self.made(expected)
        if tick:
            self._later(ADOPT_AFTER, self._settle)
        return None

    def withdraw(self, expected: Expected) -> Operation | None:
        """Its spawn failed: no longer expected; its operation if one was made."""
        with self._lock:
            self.expected.pop(expected.op_id, None)
            return expected.op

    def claim(self) -> None:
        """(Under the registry's lock: before anything reads it.) Every expected spawn becomes
        its operation now: one already spawned is deferred as if adopted at its spawn (the
        tick settles it)."""
        if self.expected:
            for expected in list(self.expected.values()):
                self._claim(expected)

    def operation_of(self, expected: Expected) -> Operation:
        """Its operation, made now if it was not yet."""
        with self._lock:
            return self.made(expected)

    def _claim(self, expected: Expected) -> Operation:
        """(Under the lock.)"""
        del self.expected[expected.op_id]
        op = self.made(expected)
        if expected.pid and not op.done:
            self.pending[op.id] = _Deferred(op, expected.pid, None, expected.popen(), True, expected.born)
        return op

    def made(self, expected: Expected) -> Operation:
        """(Under the lock.) Its operation, made now if it was not yet."""
        if expected.op is None:
            expected.op = self._make(expected)
        return expected.op

    def _make(self, expected: Expected) -> Operation:
        """(Under the lock.) Its operation, registered quietly, started when the spawn was."""
        assert self._new is not None and self._register is not None
        e = expected
        op: Operation = self._new(
            name=e.name(), kind="process", policy=e.policy, owner=e.owner, op_id=e.op_id
        )
        if self._register(op, announce=False, quiet=True):
            op.started = e.started
        return op

    def made_ended(self, expected: Expected) -> Operation:
        """The operation of a spawn ``record`` recorded ended (never registered): as it ended."""
        assert self._new is not None
        e = expected
        op: Operation = self._new(
            name=e.name(), kind="process", policy=e.policy, owner=e.owner, op_id=e.op_id
        )
        op.started, op.ended, op.returncode = e.started, e.ended, e.status
        op.state = State.COMPLETED if e.status in (0, None) else State.FAILED
        return op

    def now(self, op: Operation, pid: int, popen: Any, cgroup: bool) -> None:
        """Watch ``pid`` now (``KeyError``: it was short-lived, and its end is recorded)."""
        self._adopt_now(_Deferred(op, pid, None, popen, cgroup))

    def drop(self, op_id: str) -> None:
        """(Under the registry's lock.) Its operation ended: nothing left to adopt."""
        pending = self.pending.pop(op_id, None)
        if pending is not None:
            pending.close()

    def _add(self, pending: _Deferred) -> None:
        with self._lock:
            if pending.op.done:
                pending.close()
                return
            self.pending[pending.op.id] = pending
            tick = not self._tick
            self._tick = True
        if tick:  # one wake-up serves every spawn of the next ADOPT_AFTER
            self._later(ADOPT_AFTER, self._settle)

    def _settle(self) -> None:
        """The captured processes spawned before this tick's window: those still running (or
        whose tree lives on) are adopted, the others end here — one /proc listing for all of
        them. A spawn still only expected (nothing read the registry meanwhile) that ended
        with nothing left is recorded as such, its operation never made (``record``). The
        youngest wait for the next tick: in a loop of spawns one is always running as the
        tick fires, a millisecond from its end, and watching it would cost more than all the
        others."""
        settled = threading.Event()
        me = threading.get_ident()
        with self._lock:
            # (Half the window: a timer that fires a little early still settles what asked for it.)
            aged = time.monotonic() - ADOPT_AFTER / 2
            ripe = [e for e in self.expected.values() if e.pid and e.born <= aged]
            batch = [p for p in self.pending.values() if p.born <= aged]
            for pending in batch:
                del self.pending[pending.op.id]
                self._adopting[pending.op.id] = (settled, me)
            # (What is left waits for the next tick, asked for now.)
            self._tick = again = bool(self.pending) or any(
                e.pid and e.born > aged for e in self.expected.values()
            )
        if again:
            self._later(ADOPT_AFTER, self._settle)
        late: list[_Deferred] = []  # spawns of ``ripe`` to watch after all
        try:
            ended, left = self._sort(ripe, batch, late, (settled, me))
            for pending in late:
                self._adopt_quietly(pending)
            self._settle_batch(batch, ended, left)
        finally:
            with self._lock:
                for pending in batch + late:
                    self._adopting.pop(pending.op.id, None)
                if not self._tick and (self.pending or any(e.pid for e in self.expected.values())):
                    self._tick = True  # (something failed above: the next tick tries again)
                    self._later(ADOPT_AFTER, self._settle)
            settled.set()

    def _sort(
        self,
        ripe: list[Expected],
        batch: list[_Deferred],
        late: list[_Deferred],
        adopting: tuple[threading.Event, int],
    ) -> tuple[list[_Deferred], Mapping[str, list[int]]]:
        """The tick's batch sorted: the ``ripe`` expected spawns over with nothing left are
        recorded, the others made operations to watch (added to ``late``, marked ``adopting``);
        the ended of ``batch``, and what carries the cookies of everything over (one look)."""
        over = {}  # the ripe spawns found exited: their statuses
        for expected in ripe:
            status, _ = _status_of(expected.pid, None, expected.popen())
            if status is not _RUNNING:
                over[expected] = status
        ended = [p for p in batch if p.exited()]
        ids = {e.op_id for e in over} | {p.op.id for p in ended}
        left = self._left(ids, [*over, *ended], batch) if ids else {}
        with self._lock:
            for expected in ripe:
                if self.expected.get(expected.op_id) is not expected:
                    continue  # a trigger or a listing made its operation meanwhile
                if (
                    expected in over
                    and not left.get(expected.op_id)
                    and self._record(expected, over[expected])
                ):
                    del self.expected[expected.op_id]
                    continue
                op = self._claim(expected)  # running, or its `cmd &` lives on: watched
                claimed = self.pending.pop(op.id, None)
                if claimed is not None:
                    late.append(claimed)
                    self._adopting[op.id] = adopting
        return ended, left

    def _left(
        self, ids: set[str], over: Sequence[Expected | _Deferred], batch: Sequence[_Deferred]
    ) -> Mapping[str, list[int]]:
        """What still carries the cookies of ``ids`` (spawns that are ``over``; ``batch``: the
        tick's others): one ``/proc`` listing — or none, when every pid handed out since the
        first of them is a captured spawn of ours (nothing else was started since: nothing
        can carry them)."""
        first = min(o.pid for o in over)
        # (Pids wrap at pid_max: only over a span no machine forks that many processes in.)
        if time.monotonic() - min(o.born for o in over) < KNOWN_SPAN:
            last = side().call(newest_pid)
            if last is not None:  # (the spawns' pids read after it: any of them up to it is there)
                with self._lock:
                    known = {o.pid for o in over}
                    known.update(p.pid for p in batch)
                    known.update(p.pid for p in self.pending.values())
                    for expected in self.expected.values():
                        known.add(expected.pid or _forked(expected))
                if handed_out_only(first, last, known):
                    return {}
        return side().call(carriers_of, ids, first)

    def _record(self, expected: Expected, status: Any) -> bool:
        """(Under the lock.) An expected spawn ended with nothing left: its end is recorded
        without making its operation (False: it must be made after all — a cancel of its id
        is remembered, the registry is closed)."""
        if self._recorder is None:
            return False
        expected.status, expected.ended = status, time.time()
        expected.popen = None  # (its Popen is no longer looked at: never kept alive by the history)
        return self._recorder(expected)

    def _settle_batch(self, batch: list[_Deferred], ended: list[_Deferred], left: Mapping[str, Any]) -> None:
        for pending in batch:
            if pending not in ended:
                self._adopt_quietly(pending)
        for pending in ended:
            if left.get(pending.op.id):
                self._adopt_quietly(pending)  # its root is gone, its `cmd &` lives on
                continue
            status = pending.status()
            pending.close()
            self._ended(pending.op, status)

    def _adopt_quietly(self, pending: _Deferred) -> None:
        try:
            self._adopt_now(pending)
        except KeyError:
            pass  # ended meanwhile: recorded
        except Exception:  # one process must not stop the others' adoption
            log.exception("adopting %d failed", pending.pid)

    def now_among(self, ops: Sequence[Operation]) -> None:
        """Adopt now the deferred ones among ``ops`` (a trigger is about to end them)."""
        me = threading.get_ident()
        with self._lock:
            if not self.pending and not self._adopting:
                return
            batch = [p for p in (self.pending.pop(op.id, None) for op in ops) if p is not None]
            # (Never on the tick's own thread: a timeout cancel runs there.)
            in_flight = {entry[0] for op in ops if (entry := self._adopting.get(op.id)) and entry[1] != me}
        for pending in batch:
            self._adopt_quietly(pending)
        for settled in in_flight:
            settled.wait(ADOPT_WAIT)  # the tick is attaching their runners right now

    def _adopt_now(self, pending: _Deferred) -> None:
        op, pid = pending.op, pending.pid
        # (/proc reads on the side thread: never a descriptor number the user may be reusing.)
        root = side().call(root_identity, pid)
        if root is not None and pending.exited():
            root = None  # it exited meanwhile: the pid may name another process by now
        if root is None and not side().call(carriers_since, op.id, pid):
            # Gone and reaped already, and nothing carries its cookie: it was short-lived.
            status = pending.status()
            pending.close()
            self._ended(op, status)
            raise KeyError(pid)
        # (A root already reaped whose `job &` lives on: the cookie holds that tree.)
        runner = CapturedRunner(Tree(op.id, root, op.grace, None, cgroup_complete=False), pending.popen())
        try:
            self._attach(op, runner, pending.fd)
        finally:
            pending.close()
        if pending.cgroup and root is not None:
            if op.cancel_requested:
                return  # being ended now: its descendants and cookie find it
            # A cgroup only for what lives on: moving a process into one takes the kernel's
            # fork lock for an RCU grace period (5–12 ms after idle), stalling every fork of
            # the machine meanwhile (a pool starting its workers).
            self._later(CGROUP_AFTER, lambda: self._join_later(op, runner, pid))

    def _join_later(self, op: Operation, runner: CapturedRunner, pid: int) -> None:
        """A captured tree that lived ``CGROUP_AFTER`` gets its cgroup (where one can be made)."""
        if op.done or op.cancel_requested:
            return
        group = Cgroup.create(op.id)
        if group is None:
            return
        runner.tree.cgroup = group
        if op.done:
            self._release(runner)
            return
        # Off the caller's thread (the join may take ms). Until it has joined, and afterwards
        # too, the tree is also found by its descendants and its cookie (a captured tree's
        # cgroup is never taken as complete).
        side().submit(_join_cgroup, runner, group, pid)
        self._watch(op, runner)  # again, now with its cgroup


def _join_cgroup(runner: CapturedRunner, group: Cgroup, pid: int) -> None:
    """(On the side thread.) Its cgroup holds its tree only if the root still ran once its
    children were moved too (a root that exited first left them outside). A failed join
    leaves the cgroup empty (the tree keeps it: a canceller may be reading it right now);
    it goes when the operation ends."""
    if group.add_tree(pid):
        runner.joined_alive = running(runner.tree.root)
