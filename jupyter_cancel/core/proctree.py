"""Process trees: spawn in a session of their own, find every member, terminate.

A process is (pid, create_time): members are held as ``psutil.Process`` (which
snapshots create_time) and, on Linux, as a pidfd opened and then re-checked, so a
signal can only ever reach the process that was found, never a reused pid.

Members are found three ways, each catching escapes the others miss:

* the descendant walk (children of children);
* the environment cookie ``JUPYTER_CANCEL_OP=<id>`` inherited by every process the
  operation starts, found by a sweep of ``/proc/*/environ`` (catches ``setsid`` and
  double-fork daemons reparented to init);
* a cgroup v2 per operation where one is writable (catches even ``env -i`` escapes,
  and ``cgroup.kill`` is atomic against fork races).
"""

from __future__ import annotations

import errno
import logging
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import psutil

from .cgroup import Cgroup, children_of
from .fds import pidfd_open
from .platform import current

log = logging.getLogger(__name__)

COOKIE = "JUPYTER_CANCEL_OP"
_COOKIE_B = COOKIE.encode() + b"="
#: The cookie of one start of one kernel (set by the server in the kernel's environment):
#: everything that kernel starts, in any language, inherits it.
KERNEL_COOKIE = "JUPYTER_CANCEL_KERNEL"
_KERNEL_COOKIE_B = KERNEL_COOKIE.encode() + b"="
#: At most this many processes are walked through the kernel's children lists before the
#: /proc pass (which finds any others).
_WALK_MAX = 1000
#: How long to wait for processes to vanish after SIGKILL before calling them unkillable.
KILL_WAIT = 1.0
_FORK_ROUNDS = 5
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def spawn(
    argv: Sequence[str],
    *,
    op_id: str,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    capture: bool = True,
    cgroup: Cgroup | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session, tagged with the operation's cookie.

    With ``capture`` stdout and stderr are merged into one pipe; stdin is closed.
    With a ``cgroup`` the process joins it before it execs, so nothing escapes it.
    """
    full_env = dict(os.environ if env is None else env)
    full_env[COOKIE] = op_id
    program = argv[0]
    if os.sep in program and cwd is not None and not os.path.isabs(program):
        program = os.path.join(os.fspath(cwd), program)
    if shutil.which(program, path=full_env.get("PATH", os.defpath)) is None:
        # Checked here so a missing program raises as with Popen, also behind the cgroup wrapper.
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", argv[0])
    if cgroup is not None:
        argv = cgroup.wrap(argv)
    return subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.STDOUT if capture else None,
        start_new_session=True,
        close_fds=True,
    )


_protected_cache: tuple[int, frozenset[int]] | None = None


def _protected() -> frozenset[int]:
    """This process and its ancestors: never signalled, whatever they carry."""
    global _protected_cache
    if _protected_cache is not None and _protected_cache[0] == os.getpid():
        return _protected_cache[1]
    pids = {os.getpid(), 0, 1}
    try:
        pids.update(p.pid for p in psutil.Process().parents())
    except psutil.Error:
        pass
    _protected_cache = (os.getpid(), frozenset(pids))
    return _protected_cache[1]


def is_protected(pid: int) -> bool:
    """Whether ``pid`` is this process or one of its ancestors: never ours to signal."""
    return pid in _protected()


#: A process in the middle of an ``exec`` reads as having no environment for a moment (its
#: new memory has none yet): an empty read is read again after these pauses (seconds).
_EMPTY_RETRIES = (0.0005, 0.002, 0.005)
_PF_KTHREAD = 0x00200000
_PF_EXITING = 0x00000004


def _environ(pid: int) -> bytes:
    with open(f"/proc/{pid}/environ", "rb") as fh:
        return fh.read()


def _may_be_execing(pid: int) -> bool:
    """An empty environment read may be an exec in progress: not a kernel thread, not a
    zombie or an exiting process (those read empty for good)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        fields = stat[stat.rindex(b")") + 2 :].split(b" ", 8)
        flags = int(fields[6])
    except (OSError, ValueError, IndexError):
        return False
    return fields[0] not in (b"Z", b"X") and not flags & (_PF_KTHREAD | _PF_EXITING)


def _pause(seconds: float) -> None:
    time.sleep(seconds)


def _settle_empty(pids: Iterable[int], found: Callable[[int, bytes], None]) -> None:
    """Read again the environments that read empty, after short pauses, for the processes
    that may have been in the middle of an ``exec``; ``found(pid, environ)`` for each that
    then has one. A process started with ``env -i`` costs at most the sum of the pauses."""
    pending = [pid for pid in pids if _may_be_execing(pid)]
    for pause in _EMPTY_RETRIES:
        if not pending:
            return
        _pause(pause)
        still = []
        for pid in pending:
            try:
                environ = _environ(pid)
            except OSError:
                continue  # gone
            if environ:
                found(pid, environ)
            else:
                still.append(pid)
        pending = still


def _read_carriers(pids: Iterable[int], found: Callable[[int, bytes], None]) -> None:
    """``found(pid, environ)`` for each of ``pids`` that has an environment; those that read
    empty are read again (``_settle_empty``); gone or unreadable ones are skipped."""
    empty: list[int] = []
    for pid in pids:
        try:
            environ = _environ(pid)
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if environ:
            found(pid, environ)
        else:
            empty.append(pid)
    if empty:
        _settle_empty(empty, found)


class Snapshot:
    """One pass over /proc: parent of every process, and the cookie each one carries."""

    def __init__(self, *, cookies: bool = True, since: float | None = None) -> None:
        """``since``: only processes started at or after this time (epoch seconds) can carry
        a cookie we look for: older ones' environments are not read (most of /proc)."""
        self.children: dict[int, list[int]] = {}
        self.cookie: dict[bytes, list[int]] = {}
        #: Carriers of each kernel cookie (``KERNEL_COOKIE``), read in the same pass.
        self.kernel_cookie: dict[bytes, list[int]] = {}
        protected = _protected()
        min_ticks = -1.0
        if since is not None:
            min_ticks = (since - psutil.boot_time()) * _CLK_TCK - 2  # ticks since boot, with slack
        readable: list[int] = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            try:
                with open(f"/proc/{pid}/stat", "rb") as fh:
                    stat = fh.read()
                fields = stat[stat.rindex(b")") + 2 :].split(b" ", 20)
                ppid = int(fields[1])
                self.children.setdefault(ppid, []).append(pid)
                # Kernel threads (kthreadd, pid 2, and its children) have no environment.
                if cookies and 2 not in (pid, ppid) and pid not in protected and int(fields[19]) >= min_ticks:
                    readable.append(pid)
            except (OSError, ValueError):
                continue  # gone meanwhile
        _read_carriers(readable, self._carrier)

    def _carrier(self, pid: int, environ: bytes) -> None:
        op_id = _cookie_of(environ)
        if op_id is not None:
            self.cookie.setdefault(op_id, []).append(pid)
        kernel = _cookie_of(environ, _KERNEL_COOKIE_B)
        if kernel is not None:
            self.kernel_cookie.setdefault(kernel, []).append(pid)

    def descendants(self, pid: int) -> list[int]:
        out, stack = [], [pid]
        while stack:
            for child in self.children.get(stack.pop(), ()):
                out.append(child)
                stack.append(child)
        return out


def running(proc: psutil.Process | int | None, *, fresh: bool = False) -> bool:
    """Whether a process still runs: not gone, not a reused pid, not a zombie (a zombie holds
    nothing: it counts as gone). ``fresh``: its identity was just read, skip re-checking it."""
    if proc is None:
        return False
    try:
        if isinstance(proc, int):
            proc, fresh = psutil.Process(proc), True
        return (fresh or proc.is_running()) and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def carriers_since(op_id: str, first_pid: int) -> list[int]:
    """Pids carrying ``op_id``'s cookie among processes started after ``first_pid``: one
    directory listing and a few small reads, where a full sweep reads every process."""
    return carriers_of({op_id}, first_pid).get(op_id, [])


def newest_pid() -> int | None:
    """The pid the kernel handed out last (``/proc/loadavg``'s last field), None if unknown."""
    try:
        with open("/proc/loadavg", "rb") as fh:
            return int(fh.read().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def newer_pids(pids: Iterable[int], first_pid: int, last_pid: int | None) -> list[int]:
    """Of ``pids``, those handed out at or after ``first_pid``. Pids are handed out in
    increasing order up to ``pid_max``, then from the bottom again: if the last one handed out
    (``last_pid``, read before the listing) is below ``first_pid`` the counter wrapped since,
    and the newer pids are those above ``first_pid`` and those up to ``last_pid``. Unknown
    ``last_pid``: all of them (a full read, never a miss)."""
    if last_pid is None:
        return list(pids)
    if last_pid >= first_pid:
        return [pid for pid in pids if pid >= first_pid]
    return [pid for pid in pids if pid >= first_pid or pid <= last_pid]


def handed_out_only(first_pid: int, last_pid: int, known: Collection[int]) -> bool:
    """Whether every pid handed out from ``first_pid`` to ``last_pid`` is one of ``known``
    (the counter not gone round between: the caller knows). Then no other process (nor
    thread) was started meanwhile — none that could carry a cookie of those processes."""
    return (
        first_pid <= last_pid
        and last_pid - first_pid < len(known)
        and all(pid in known for pid in range(first_pid, last_pid + 1))
    )


def carriers_of(op_ids: set[str], first_pid: int) -> dict[str, list[int]]:
    """``carriers_since`` for several operations at once (one listing, each process read once)."""
    if not current().proc:
        return {op_id: [p.pid for p in procs] for op_id, procs in sweep(op_ids).items()}
    last = newest_pid()  # before the listing: whatever it lists was handed out by then or after
    pids = [int(e) for e in os.listdir("/proc") if e.isdigit()]
    wanted = {op_id.encode(): op_id for op_id in op_ids}
    found: dict[str, list[int]] = {}
    protected = _protected()

    def carrier(pid: int, environ: bytes) -> None:
        cookie = _cookie_of(environ)
        if cookie is not None and cookie in wanted and pid not in protected:
            found.setdefault(wanted[cookie], []).append(pid)

    _read_carriers(newer_pids(pids, first_pid, last), carrier)
    return found


def sweep(op_ids: Iterable[str], cookie: str = COOKIE) -> dict[str, list[psutil.Process]]:
    """Every process of this user whose environment carries the cookie of one of ``op_ids``
    (``cookie``: the variable, an operation's or a kernel's)."""
    wanted = {op_id.encode(): op_id for op_id in op_ids}
    if not wanted:
        return {}
    if not current().proc:
        return _sweep_psutil(wanted, cookie)
    found: dict[str, list[psutil.Process]] = {}
    snap = Snapshot()
    carriers = snap.cookie if cookie == COOKIE else snap.kernel_cookie
    for key, op_id in wanted.items():
        for pid in carriers.get(key, ()):
            try:
                found.setdefault(op_id, []).append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                continue
    return found


def _cookie_of(environ: bytes, name: bytes = _COOKIE_B) -> bytes | None:
    if environ.startswith(name):
        start = len(name)
    else:
        at = environ.find(b"\0" + name)
        if at < 0:
            return None
        start = at + 1 + len(name)
    end = environ.find(b"\0", start)
    return environ[start:] if end < 0 else environ[start:end]


def _sweep_psutil(wanted: dict[bytes, str], cookie: str) -> dict[str, list[psutil.Process]]:
    # macOS and others without /proc: slower, same result where environ() is readable.
    found: dict[str, list[psutil.Process]] = {}
    protected = _protected()
    for proc in psutil.process_iter():
        if proc.pid in protected:
            continue
        try:
            value = proc.environ().get(cookie)
        except psutil.Error:
            continue
        if value is not None and value.encode() in wanted:
            found.setdefault(wanted[value.encode()], []).append(proc)
    return found


@dataclass
class Tree:
    """What is known of one operation's processes."""

    op_id: str
    root: psutil.Process | None
    grace: float
    cgroup: Cgroup | None = None
    #: The cgroup holds every member (the root joined it before it could fork). A process
    #: moved in after it started may have forked already: then the walk and the cookie too.
    cgroup_complete: bool = True
    #: Found but never members (a kernel's own process and helpers, when its work is ended).
    exclude: frozenset[int] = frozenset()
    #: Which cookie names this tree's processes: an operation's (``COOKIE``) or a kernel's.
    cookie: str = COOKIE
    #: The root is our unreaped child (``jc.start``): its pid cannot be reused under us, so
    #: its group can be signalled before anything is read.
    owns_root: bool = False
    #: Its members as a scan of their owner's processes just found them (a server ending the
    #: work of a kernel without the extension, read from that kernel's cgroup): no walk, cookie
    #: or /proc pass of its own; each is still checked to be the process found (no reused pid).
    known: tuple[psutil.Process, ...] | None = None

    def collect(self, snap: Snapshot | None = None) -> dict[int, psutil.Process]:
        """Snapshot the live members: cgroup members where there is a cgroup (it holds every
        escape), and the descendant walk plus the cookie carriers where there is none or it
        may not hold everything (``cgroup_complete`` False)."""
        root, pids = self.member_pids(snap)
        members: dict[int, psutil.Process] = {} if root is None else {root.pid: root}
        for pid in pids:
            try:
                members[pid] = psutil.Process(pid)
            except psutil.NoSuchProcess:
                continue
        return members

    def member_pids(self, snap: Snapshot | None = None) -> tuple[psutil.Process | None, list[int]]:
        """The root if it still runs, and the pids of the other members (read, not yet
        verified: ``collect`` and the termination check each process's identity)."""
        root = self.root
        pids: list[int] = []
        try:
            if root is not None and not (child_running(root.pid) if self.owns_root else root.is_running()):
                root = None
        except psutil.Error:
            root = None
        if self.known is not None:
            pids.extend(p.pid for p in self.known if running(p))
        elif self.cgroup is not None:
            pids.extend(self.cgroup.pids())
        if self.known is None and (self.cgroup is None or not self.cgroup_complete):
            pids.extend(self._walk_and_sweep(snap, root))
        skip = _protected() | self.exclude
        if root is not None:
            if root.pid in skip:
                root = None
            else:
                skip = skip | {root.pid}
        seen: set[int] = set()
        out = []
        for pid in pids:
            if pid not in skip and pid not in seen:
                seen.add(pid)
                out.append(pid)
        return root, out

    def _walk_and_sweep(self, snap: Snapshot | None, root: psutil.Process | None) -> list[int]:
        """The live root's descendants and every carrier of this tree's cookie."""
        pids: list[int] = []
        if current().proc:
            snap = snap if snap is not None else Snapshot()
            if root is not None:
                pids.extend(snap.descendants(root.pid))
            if current().cookie_sweep:
                carriers = snap.cookie if self.cookie == COOKIE else snap.kernel_cookie
                pids.extend(carriers.get(self.op_id.encode(), ()))
            return pids
        if root is not None:
            try:
                pids.extend(c.pid for c in root.children(recursive=True))
            except psutil.Error:
                pass
        if current().cookie_sweep:
            pids.extend(p.pid for p in sweep([self.op_id], self.cookie).get(self.op_id, ()))
        return pids


@dataclass
class Outcome:
    """What a termination did: ``gone`` and ``alive`` (unkillable) pids per operation."""

    gone: dict[str, list[int]] = field(default_factory=dict)
    alive: dict[str, list[int]] = field(default_factory=dict)
    killed: dict[str, list[int]] = field(default_factory=dict)


class _Member:
    """One verified process: signals go through its pidfd when there is one."""

    __slots__ = ("_proc", "fd", "pid", "tree")

    def __init__(self, proc: psutil.Process | None, tree: Tree, pid: int | None = None) -> None:
        self._proc = proc
        self.pid = proc.pid if proc is not None else int(pid)  # type: ignore[arg-type]
        self.tree = tree
        self.fd: int | None = None

    @property
    def proc(self) -> psutil.Process:
        """Its psutil handle, made on first use (a member pinned by pidfd and verified by its
        cgroup never needs one: no /proc read)."""
        if self._proc is None:
            self._proc = psutil.Process(self.pid)
        return self._proc

    @classmethod
    def pin(cls, pid: int, tree: Tree) -> _Member | None:
        """A process just found by pid: pinned by a pidfd first, its identity read after (so
        it is the pinned process's), zombies left out — two reads of its stat, not three."""
        fd = None
        if current().pidfd:
            try:
                fd = pidfd_open(pid)
            except OSError:
                return None
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                member = cls(proc, tree)
                member.fd = fd
                return member
        except psutil.Error:
            pass
        if fd is not None:
            os.close(fd)
        return None

    def open(self) -> bool:
        """Pin the process; False when it is already gone or its pid was reused."""
        if current().pidfd:
            try:
                self.fd = pidfd_open(self.pid)
            except OSError:
                return False
        try:
            # is_running() compares create_time: a reused pid reads as not running.
            if self.proc.is_running() and self.proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except psutil.Error:
            pass
        self.close()
        return False

    def signal(self, sig: int) -> None:
        if self.fd is None:
            try:
                if not self.proc.is_running():  # no pidfd: identity re-checked (as psutil does)
                    return
            except psutil.Error:
                return
        if _deliver(self.fd, self.pid, sig):
            log.debug("sent %s to %d (%s)", signal.Signals(sig).name, self.pid, self.tree.op_id)

    def gone(self) -> bool:
        return not running(self.proc)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Termination:
    """One termination of a set of trees, in two steps: ``signal`` (SIGTERM to every
    process group and member: fast, safe to call from a signal handler's thread) and
    ``finish`` (wait up to each grace, freeze and SIGKILL what is left, re-collect)."""

    def __init__(self, trees: Sequence[Tree]) -> None:
        self.trees = list(trees)
        self.live: dict[int, _Member] = {}
        self.outcome = Outcome()
        self.started = 0.0
        #: When each tree's last member got its SIGTERM: its grace runs from then, so a
        #: process is never SIGKILLed because signalling the others (thousands) took time.
        self.signalled: dict[str, float] = {}

    def signal(self) -> Termination:
        self.started = time.monotonic()
        if not self.trees:
            return self
        # Signal first, collect after: the group each live root leads gets SIGTERM before any
        # read (most members are in it); the collection then finds the rest (a complete
        # cgroup's members by its list and their pidfds, others by the /proc walk).
        groups: set[int] = set()
        for t in self.trees:
            if _signal_root_group(t, signal.SIGTERM):
                self.signalled[t.op_id] = time.monotonic()
                groups.add(t.root.pid)  # type: ignore[union-attr]
        pgids: dict[int, int | None] = {}  # each member's group, read once
        # Without a complete cgroup the collection is a pass over all of /proc: first the
        # descendants of the roots we started, as the kernel lists them (a few small reads),
        # so a setsid member is not left waiting for that pass.
        walked = [t for t in self.trees if t.owns_root and not _by_cgroup(t)]
        if walked and current().proc:
            for t in walked:
                _enroll_descendants(t, self.live)
            self._signal_members(groups, pgids)
        _enroll(self.trees, self.live)
        self._signal_members(groups, pgids)
        # Then the groups members lead: what forked since the collection.
        for member in list(self.live.values()):
            _signal_group(member, pgids.get(member.pid), groups, signal.SIGTERM)
        return self

    def _signal_members(self, groups: set[int], pgids: dict[int, int | None]) -> None:
        """One pidfd signal to each member outside the signalled groups that has none yet (a
        signal costs tens of µs here: none is sent twice before every member has one),
        leaves first; ``pgids`` records each member's group as it is handled."""
        for member in _children_first(self.live.values()):
            if member.pid in pgids:
                continue
            pgid = pgids[member.pid] = _group_of(member.pid)
            if pgid in groups:
                continue  # it had its SIGTERM with its root's group
            member.signal(signal.SIGTERM)
            self.signalled[member.tree.op_id] = time.monotonic()

    def close(self) -> None:
        for member in self.live.values():
            member.close()
        self.live.clear()

    def finish(self) -> Outcome:
        trees, live, outcome = self.trees, self.live, self.outcome
        if not trees:
            return outcome
        try:
            by_id = {t.op_id: t for t in trees}
            deadlines = {
                op_id: self.signalled.get(op_id, self.started) + t.grace for op_id, t in by_id.items()
            }
            _wait(live, deadlines, outcome)
            # Forks made while dying, and whatever ignores SIGTERM: freeze, re-collect, kill.
            for _ in range(_FORK_ROUNDS):
                _enroll(trees, live)
                if not live:
                    break
                for member in live.values():
                    member.signal(signal.SIGSTOP)
                _enroll(trees, live)
                for t in trees:
                    if t.cgroup is not None:
                        t.cgroup.kill()
                for member in live.values():
                    log.warning(
                        "operation %s: pid %d outlived its grace, sending SIGKILL",
                        member.tree.op_id,
                        member.pid,
                    )
                    outcome.killed.setdefault(member.tree.op_id, []).append(member.pid)
                    member.signal(signal.SIGKILL)
                kill_deadline = time.monotonic() + KILL_WAIT
                _wait(live, {op_id: kill_deadline for op_id in by_id}, outcome)
                if live:
                    break  # unkillable: more rounds will not help
            for member in live.values():
                outcome.alive.setdefault(member.tree.op_id, []).append(member.pid)
        finally:
            self.close()
        return outcome


def terminate(trees: Sequence[Tree]) -> Outcome:
    """Terminate every tree: SIGTERM, wait up to each tree's grace, SIGKILL, wait.

    Every process group led by a member and every member gets SIGTERM; what is left
    at the grace gets SIGKILL, after being frozen (SIGSTOP) so that it cannot fork
    around the kill. Returns what went and what survived (uninterruptible sleep).
    Never raises for a process that vanished meanwhile.
    """
    return Termination(trees).signal().finish()


def _enroll(trees: Sequence[Tree], live: dict[int, _Member]) -> None:
    # One /proc pass serves every tree without a complete cgroup.
    snap = None
    if current().proc and any(not _by_cgroup(t) and t.known is None for t in trees):
        snap = Snapshot(since=_earliest_root(trees))
    for t in trees:
        if _by_cgroup(t):
            _enroll_cgroup(t, live)
            continue
        root, pids = t.member_pids(snap)
        if root is not None and root.pid not in live:
            member = _Member(root, t)
            if member.open():
                live[root.pid] = member
        for pid in pids:
            if pid not in live:
                pinned = _Member.pin(pid, t)
                if pinned is not None:
                    live[pid] = pinned


def _enroll_descendants(tree: Tree, live: dict[int, _Member]) -> None:
    """The live descendants of a root we started (unreaped: its pid is its own), from the
    kernel's children lists, pinned; what was reparented (a daemon) is the /proc pass's."""
    root = tree.root
    if root is None or root.pid in tree.exclude or not child_running(root.pid):
        return
    skip = _protected() | tree.exclude
    stack, seen = [root.pid], {root.pid}
    while stack and len(seen) < _WALK_MAX:
        for child in children_of(stack.pop()):
            if child in seen:
                continue
            seen.add(child)
            stack.append(child)
            if child not in live and child not in skip:
                pinned = _Member.pin(child, tree)
                if pinned is not None:
                    live[child] = pinned


def _by_cgroup(tree: Tree) -> bool:
    """Its cgroup holds every member (it was joined before the root could fork) and pidfds
    pin them: membership is then read from the cgroup alone, no /proc read per process."""
    return current().pidfd and tree.cgroup is not None and tree.cgroup_complete


def _enroll_cgroup(tree: Tree, live: dict[int, _Member]) -> None:
    """The members of a complete cgroup: its pids pinned by pidfd, then kept if the cgroup
    still lists them. A pid listed after its pidfd was opened belongs to a member now; if
    the pinned process died and the pid went to a new member meanwhile, the pidfd signals
    nothing (the next collection pins the new one) — a pid is never signalled blindly. The
    cgroup lists no zombies."""
    assert tree.cgroup is not None
    skip = _protected() | tree.exclude
    opened: dict[int, int] = {}
    for pid in tree.cgroup.pids():
        if pid in live or pid in skip or pid in opened:
            continue
        try:
            opened[pid] = pidfd_open(pid)
        except OSError:
            continue  # gone already
    if not opened:
        return
    still = set(tree.cgroup.pids())
    for pid, fd in opened.items():
        if pid in still:
            member = _Member(tree.root if tree.root is not None and tree.root.pid == pid else None, tree, pid)
            member.fd = fd
            live[pid] = member
        else:
            os.close(fd)


def _earliest_root(trees: Sequence[Tree]) -> float | None:
    """The earliest root start: nothing of these trees can be older. None if unknown."""
    times = []
    for t in trees:
        if t.root is None:
            return None
        try:
            times.append(t.root.create_time())
        except psutil.Error:
            return None
    return min(times) if times else None


def _children_first(members: Iterable[_Member]) -> list[_Member]:
    # Reversed discovery order (psutil's recipe): the walk finds parents before their
    # children, so leaves are signalled first. Pid numbers say nothing: pids wrap.
    return list(members)[::-1]


def _deliver(fd: int | None, pid: int, sig: int) -> bool:
    """Send ``sig`` through a pidfd (pinned ``pid``), or to ``pid`` where there is none (its
    identity checked by the caller); False if it is gone. Every signal to one process leaves
    through here, every signal to a group through ``_deliver_group``."""
    try:
        if fd is not None:
            signal.pidfd_send_signal(fd, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        log.debug("no permission to signal %d", pid)
        return False
    return True


def _deliver_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
    except OSError:
        return False
    return True


def child_running(pid: int) -> bool:
    """Our unreaped child still runs (not exited, not a zombie): one ``waitid`` that reaps
    nothing, where ``psutil.Process.is_running`` reads /proc."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    except ChildProcessError:
        return False  # reaped already


def _signal_root_group(tree: Tree, sig: int) -> bool:
    """killpg the group a tree's root leads, if the root is a process we started and have not
    reaped: its pid, hence its group id, cannot have been reused. ``spawn`` started it in a
    session of its own, and a session leader cannot leave its group: no ``getpgid`` asked."""
    root = tree.root
    if root is None or not tree.owns_root or root.pid in tree.exclude or root.pid in _protected():
        return False
    return _deliver_group(root.pid, sig)


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _signal_group(member: _Member, pgid: int | None, done: set[int], sig: int) -> None:
    """killpg when ``member`` leads its group ``pgid`` (once per group): reaches members
    forked since the collection."""
    if pgid == member.pid and pgid not in done and pgid not in _protected() and pgid != os.getpgrp():
        done.add(pgid)
        _deliver_group(pgid, sig)


def _wait(live: dict[int, _Member], deadlines: Mapping[str, float], outcome: Outcome) -> None:
    """Block until members exit or their tree's deadline passes; event-driven with pidfds."""
    if current().pidfd and all(m.fd is not None for m in live.values()):
        _wait_pidfd(live, deadlines, outcome)
    else:
        _wait_psutil(live, deadlines, outcome)


def _mark_gone(member: _Member, live: dict[int, _Member], outcome: Outcome) -> None:
    """``member`` exited (its pidfd is readable, or psutil says so): recorded as gone. (Never
    reaped here: its parent reaps it.)"""
    live.pop(member.pid, None)
    member.close()
    outcome.gone.setdefault(member.tree.op_id, []).append(member.pid)


def _wait_pidfd(live: dict[int, _Member], deadlines: Mapping[str, float], outcome: Outcome) -> None:
    poller = select.poll()
    by_fd: dict[int, _Member] = {}
    for member in live.values():
        assert member.fd is not None
        poller.register(member.fd, select.POLLIN)
        by_fd[member.fd] = member
    while True:
        now = time.monotonic()
        waiting = [m for m in by_fd.values() if deadlines[m.tree.op_id] > now]
        if not waiting:
            return
        horizon = min(deadlines[m.tree.op_id] for m in waiting)
        for fd, _ in poller.poll(max(0.0, horizon - now) * 1000):
            member = by_fd.pop(fd)
            poller.unregister(fd)
            _mark_gone(member, live, outcome)
        if not by_fd:
            return


def _wait_psutil(live: dict[int, _Member], deadlines: Mapping[str, float], outcome: Outcome) -> None:
    # Fallback where pidfds are missing (macOS): look with backoff. Never psutil.wait_procs:
    # it reaps our children, stealing the exit status from their Popen (or the user's
    # waitpid, for captured work). A zombie counts as gone: it holds nothing.
    delay = 0.001
    while live:
        now = time.monotonic()
        if not [m for m in live.values() if deadlines[m.tree.op_id] > now]:
            return
        for member in list(live.values()):
            if member.gone():
                _mark_gone(member, live, outcome)
        if live:
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
