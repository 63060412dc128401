"""Kernels the kernel extension does not run in — R, bash, xeus-python, an IPython kernel that
did not load it: the server owns their processes, at the level of the kernel.

Every kernel the server starts carries a cookie in its environment (``JUPYTER_CANCEL_KERNEL``,
a new value for each start), inherited by everything it starts in any language. A kernel
without the extension is also moved into a cgroup of its own where a writable cgroup v2
exists (its children are then born there, ``env -i`` and double forks included), and its
process is pinned by a pidfd that the server's event loop watches, so its death is seen at
once. What it runs — every process of the kernel but the kernel itself and the helpers it
already had when it first answered (bash_kernel's ``bash``) — is listed as kernel-level
operations, one per independent process tree, and ended with the core's termination
(SIGTERM → grace → freeze → SIGKILL, identity checked) on restart, shutdown, death, server
shutdown, a closed last tab, an interrupt (the escapes from the kernel's process group) and
Stop. An IPython kernel with the extension keeps its per-cell ownership: the server never
sweeps it (one owner per process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from typing import Any

import psutil

from ..core.cgroup import Cgroup, remove_stale
from ..core.model import CancelReason, Reason
from ..core.operation import Operation
from ..core.platform import current
from ..core.proctree import KERNEL_COOKIE, Outcome, Tree, running, terminate
from ..core.selector import Selector
from . import adapter
from .kernels import KernelLink
from .owned import mirror

log = logging.getLogger(__name__)

#: ``c.JupyterCancel.foreign_kernels``.
MODES = ("cancel", "continue", "off")
#: Triggers after which the kernel's own process is gone or about to be: its helpers go too.
_KERNEL_ENDS = frozenset({Reason.KERNEL_DIED})
_CLIENT_GONE = frozenset({Reason.TAB_CLOSED, Reason.CLIENT_DISCONNECTED})
_NAME_CHARS = 120
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def new_cookie() -> str:
    return "k" + uuid.uuid4().hex[:16]


#: How long a foreign kernel's start waits for it to answer (and its helpers to be known).
HELPERS_WAIT = 10.0


class Launch:
    """One start of one foreign kernel: its cookie, its pinned process, cgroup and helpers."""

    def __init__(self, kernel_id: str, cookie: str, proc: psutil.Process) -> None:
        self.kernel_id = kernel_id
        self.cookie = cookie
        self.proc = proc
        self.pgid = _pgid(proc.pid)
        self.cgroup: Cgroup | None = None
        #: Every process of the kernel is in ``cgroup`` (moved in with what it had started).
        self.contained = False
        self.helpers: frozenset[int] = frozenset()
        #: Set once the kernel answered and its helpers are known.
        self.ready = asyncio.Event()
        self.moved: asyncio.Future[None] | None = None
        self.fd: int | None = None
        #: Why its process is exiting, when we asked it to (restart, shutdown).
        self.exit_reason: str | None = None

    def tree(
        self,
        grace: float,
        *,
        helpers: bool = False,
        only: frozenset[int] | None = None,
        skip: frozenset[int] = frozenset(),
    ) -> Tree:
        """Every process of this start but the kernel (and, unless ``helpers``, its helpers);
        ``only``: just these pids (and what they fork while dying); never those in ``skip``."""
        exclude = {self.proc.pid, *skip}
        if not helpers:
            exclude |= self.helpers
        tree = Tree(
            op_id=self.cookie,
            root=self.proc,
            grace=grace,
            cgroup=self.cgroup,
            cgroup_complete=self.contained,
            exclude=frozenset(exclude),
            cookie=KERNEL_COOKIE,
        )
        if only is not None:
            tree.exclude = tree.exclude | frozenset(set(tree.collect()) - only)
        return tree

    def escapes(self, grace: float) -> frozenset[int]:
        """Its processes outside the kernel's process group (``setsid``, daemons): an
        interrupt's SIGINT to the group never reaches them."""
        return frozenset(pid for pid in self.tree(grace).collect() if _pgid(pid) != self.pgid)

    def work(self, grace: float, policy: str) -> list[tuple[dict[str, Any], Tree]]:
        """The live work: one operation per independent process tree, its JSON and its tree."""
        members = self.tree(grace).collect()
        parents: dict[int, int] = {}
        for pid, proc in members.items():
            with contextlib.suppress(psutil.Error):
                parents[pid] = proc.ppid()
        children: dict[int, list[int]] = {}
        for pid, ppid in parents.items():
            children.setdefault(ppid, []).append(pid)
        out = []
        for pid, proc in members.items():
            if pid not in parents or parents[pid] in members:
                continue
            try:
                started = proc.create_time()
                argv = proc.cmdline() or [proc.name()]
            except psutil.Error:
                continue
            pids, stack = [], [pid]
            while stack:
                p = stack.pop()
                pids.append(p)
                stack.extend(children.get(p, ()))
            name = " ".join([os.path.basename(argv[0]), *argv[1:]])  # "python x.py", not its path
            op_id = f"{self.kernel_id[:8]}-{pid}-{int(started * 1000)}"
            data = {
                "id": op_id,
                "name": name if len(name) <= _NAME_CHARS else name[: _NAME_CHARS - 1] + "…",
                "kind": "process",
                "state": "running",
                "pids": pids,
                "started": started,
                "kernel_id": self.kernel_id,
                "cell_id": None,
                "client_session": None,
                "policy": policy,
                "grace": grace,
                "foreign": True,
                "root": [pid, started],
            }
            # Its members as just found (the kernel's cgroup, else its walk and cookie): ending
            # it reads no /proc of its own before its signals.
            known = tuple(members[p] for p in pids if p != pid)
            out.append((data, Tree(op_id, proc, grace, exclude=frozenset({self.proc.pid}), known=known)))
        return out


class ForeignKernels:
    """The server's ownership of foreign kernels' processes (one ``Launch`` per kernel)."""

    def __init__(self, tracker: Any) -> None:
        self.tracker = tracker
        self.app = tracker.app
        self.launches: dict[str, Launch] = {}
        #: The cookie the next start of each kernel will carry (already in its launch env).
        self._next: dict[str, str] = {}
        self._poller: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        # A kernel's cgroup is filled as it is made: an empty one a minute old was left by a
        # server that could not remove it (killed, or stopped before the kernel exited).
        remove_stale("kernel-", older_than=60.0)

    @property
    def mode(self) -> str:
        return str(self.app.foreign_kernels)

    def env(self) -> dict[str, str]:
        """What a kernel's start adds to its environment."""
        return {} if self.mode == "off" else {KERNEL_COOKIE: new_cookie()}

    def launched(self, kernel_id: str, cookie: str | None, manager: Any) -> None:
        """A kernel started with ``cookie``: the next start (a restart) gets a new one."""
        if cookie is None:
            return
        self._next[kernel_id] = new_cookie()
        adapter.set_restart_env(manager, {KERNEL_COOKIE: self._next[kernel_id]})

    def restarted_cookie(self, kernel_id: str, manager: Any) -> str | None:
        cookie = self._next.get(kernel_id)
        self.launched(kernel_id, cookie, manager)
        return cookie

    # -- adoption -----------------------------------------------------------------
    async def adopt(self, kernel_id: str, manager: Any, cookie: str | None) -> Launch | None:
        """Own a kernel the extension is not loaded in: pin it, watch it, contain it."""
        self.forget(kernel_id)
        pid = adapter.kernel_pid(manager)
        if self.mode == "off" or cookie is None or pid is None:
            return None
        try:
            launch = Launch(kernel_id, cookie, psutil.Process(pid))
        except psutil.Error:
            return None
        self.launches[kernel_id] = launch
        loop = asyncio.get_running_loop()
        if current().pidfd:
            try:
                launch.fd = os.pidfd_open(pid)
                loop.add_reader(launch.fd, self._on_exit, launch)
            except OSError:
                launch.fd = None
        launch.moved = loop.run_in_executor(None, contain, launch)
        if self._poller is None or self._poller.done():
            self._poller = loop.create_task(self._poll())
        # Sent and answered before the start (or restart) returns (bounded), so before any cell
        # a client sends: sent alone, a kernel may take a client's cell first (its clients'
        # messages and ours come on different connections; seen with xeus-python), and that
        # cell's children would read as the kernel's helpers.
        self._spawn(
            self._learn_helpers(launch, adapter.shell_request(manager, "kernel_info_request", {}, 60.0))
        )
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(launch.ready.wait(), HELPERS_WAIT)
        return launch

    def forget(self, kernel_id: str) -> None:
        launch = self.launches.pop(kernel_id, None)
        if launch is not None:
            self._unwatch(launch)

    def _unwatch(self, launch: Launch) -> None:
        if launch.fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(launch.fd)
            with contextlib.suppress(OSError):
                os.close(launch.fd)
            launch.fd = None

    async def _learn_helpers(self, launch: Launch, answered: asyncio.Future[dict[str, Any] | None]) -> None:
        """The kernel's own helpers (bash_kernel's bash): the children it started before it
        answered our kernel_info, which it did before running any cell. Told apart from a
        cell's child by start time (clock ticks since boot, the kernel's reply stamp on the
        same clock), so a cell that forks right after the reply is never taken for one. A kernel
        may handle a cell before our request (its clients' messages and ours come on different
        connections: seen with xeus-python): the cut is then when it first went busy."""
        stamp = adapter.reply_stamp(await answered)
        link = self.tracker.links.get(launch.kernel_id)
        if stamp is not None and link is not None and link.first_busy is not None:
            stamp = min(stamp, link.first_busy)
        if stamp is not None:
            reply_tick = int((stamp - time.time() + time.clock_gettime(time.CLOCK_BOOTTIME)) * _CLK_TCK)
            with contextlib.suppress(psutil.Error):
                launch.helpers = frozenset(
                    c.pid for c in launch.proc.children() if _start_tick(c.pid) < reply_tick
                )
        if launch.helpers:
            log.debug("kernel %s: helpers %s", launch.kernel_id, sorted(launch.helpers))
        launch.ready.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settled(self, launch: Launch, *, helpers: bool = True) -> None:
        """Contained (its cgroup move done) and, with ``helpers``, its helpers known (bounded:
        a kernel that never answers has none; a kernel that exited has none to wait for)."""
        if launch.moved is not None:
            with contextlib.suppress(Exception):
                await launch.moved
        if helpers and not launch.ready.is_set() and running(launch.proc):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(launch.ready.wait(), 10.0)

    # -- the view -------------------------------------------------------------------
    async def scan(self, kernel_id: str | None = None) -> None:
        """Bring each foreign kernel's operations in its link's view up to date."""
        loop = asyncio.get_running_loop()
        for kid, launch in list(self.launches.items()):
            if kernel_id is not None and kid != kernel_id:
                continue
            link = self.tracker.links.get(kid)
            if link is None or not launch.ready.is_set():
                continue  # its helpers are not known yet: they would show as its work
            await self._settled(launch, helpers=False)
            work = await loop.run_in_executor(None, launch.work, self.app.grace, self._policy())
            self._sync(link, work)

    def _policy(self) -> str:
        return "continue" if self.mode == "continue" else "cancel"

    def _sync(self, link: KernelLink, work: list[tuple[dict[str, Any], Tree]]) -> None:
        """What a scan found (``work``): new work started, work gone ended by itself — but
        not work being cancelled: its canceller reports its end, with its reason (a scan
        between its processes' end and that report would call it completed)."""
        seen = {data["id"] for data, _ in work}
        for data, _ in work:
            link.observe(data, None if data["id"] in link.live else "started")
        gone = [d for d in link.live.values() if d.get("foreign") and d["id"] not in seen]
        for data in gone:
            if not link.cancelling(data["id"]):
                link.mirror(self.tracker.work.completed(data).to_json(pids=False), "ended")

    async def _poll(self) -> None:
        """While someone watches (an events socket is open), notice work starting and ending."""
        while self.launches:
            if self.tracker.listeners:
                try:
                    await self.scan()
                except Exception:
                    log.debug("foreign kernel scan failed", exc_info=True)
            await asyncio.sleep(1.0)

    # -- ending work ------------------------------------------------------------------
    async def cancel(
        self, link: KernelLink, launch: Launch, reason: str | CancelReason, selector: Selector
    ) -> list[str]:
        """A trigger for a foreign kernel: what it ends follows ``foreign_kernels``."""
        why = CancelReason.of(reason)
        if selector.operation_ids is not None:
            return await self.tracker.terminate_known(link, reason, selector)
        if selector.cell_id is not None:
            return []  # no cells of ours in it
        if why.source in _CLIENT_GONE:
            if self.mode == "continue" or self.tracker.sessions.has_clients(
                link.kernel_id, selector.client_session
            ):
                return []
        elif selector.client_session is not None:
            return []  # a session's own work: a foreign kernel's work is the kernel's
        await self._settled(launch)
        only = None
        if why.source == Reason.KERNEL_INTERRUPT:
            only = await asyncio.get_running_loop().run_in_executor(None, launch.escapes, self.app.grace)
            if not only:
                return []
        return await self._end(link, launch, why, helpers=why.source in _KERNEL_ENDS, only=only)

    async def _end(
        self,
        link: KernelLink,
        launch: Launch,
        why: CancelReason,
        *,
        helpers: bool,
        only: frozenset[int] | None = None,
    ) -> list[str]:
        grace, policy = self.app.grace, self._policy()
        loop = asyncio.get_running_loop()
        server = self.tracker.work

        def end() -> tuple[list[Operation], Outcome]:
            # One thread hop, the signals first: list what runs, each independent tree an
            # operation of the server's registry (the trigger was decided above: named or not,
            # they all go), their SIGTERMs sent together; then, while they end, what else is
            # left of the kernel's processes (its helpers when it ends, what it started a moment
            # ago). The link hears each step on the loop, in order.
            work = launch.work(grace, policy)
            reported = [(data, tree) for data, tree in work if only is None or data["root"][0] in only]
            chosen = server.choose(reported, why, by_id=True)
            loop.call_soon_threadsafe(self._ending, link, work, chosen)
            server.end(chosen, wait=False)
            known = frozenset(pid for data, _ in reported for pid in data["pids"])
            rest = terminate([launch.tree(grace, helpers=helpers, only=only, skip=known)])
            return server.wait(chosen), rest

        ended_ops, rest = await loop.run_in_executor(None, end)
        ended = mirror(link, ended_ops, "ended")
        gone, alive = rest.gone.get(launch.cookie, []), rest.alive.get(launch.cookie, [])
        if ended or gone or alive:
            log.info(
                "kernel %s (%s): ended %d operations, %d more processes%s",
                launch.kernel_id,
                why.source,
                len(ended),
                len(gone),
                f", {len(alive)} unkillable" if alive else "",
            )
        return ended

    def _ending(
        self, link: KernelLink, work: list[tuple[dict[str, Any], Tree]], chosen: list[Operation]
    ) -> None:
        """(On the loop.) What a scan found, then which of it is being cancelled now."""
        self._sync(link, work)
        mirror(link, chosen, "cancel_requested")

    def _on_exit(self, launch: Launch) -> None:
        """The kernel's process exited (pidfd readable): end everything it left."""
        self._unwatch(launch)
        launch.ready.set()  # it will answer nothing more: its helpers are what is known now
        self._spawn(self._after_exit(launch))

    async def _after_exit(self, launch: Launch) -> None:
        launch.ready.set()
        reason = launch.exit_reason or Reason.KERNEL_DIED
        if reason == Reason.KERNEL_DIED:
            log.info("kernel %s died: ending its processes", launch.kernel_id)
        link = self.tracker.links.get(launch.kernel_id)
        try:
            if link is not None:
                await self._end(link, launch, CancelReason(reason), helpers=True)
            else:
                tree = launch.tree(self.app.grace, helpers=True)
                await asyncio.get_running_loop().run_in_executor(None, terminate, [tree])
        finally:
            if launch.cgroup is not None and not launch.cgroup.remove():
                log.debug("cgroup %s not empty yet", launch.cgroup.path)
            if self.launches.get(launch.kernel_id) is launch:
                self.launches.pop(launch.kernel_id, None)

    def exiting(self, kernel_id: str, reason: str) -> None:
        """The server is about to restart or shut the kernel down (its exit is expected)."""
        launch = self.launches.get(kernel_id)
        if launch is not None:
            launch.exit_reason = reason

    def died(self, kernel_id: str) -> bool:
        """jupyter_client's restarter saw a death: handled here where no pidfd watches it."""
        launch = self.launches.get(kernel_id)
        if launch is None:
            return False
        if launch.fd is None:
            self._spawn(self._after_exit(launch))
        return True

    def forget_later(self, kernel_id: str) -> None:
        """The kernel was shut down: where no pidfd saw it exit, end what it left now."""
        launch = self.launches.get(kernel_id)
        if launch is not None and launch.fd is None:
            self._spawn(self._after_exit(launch))

    def stop(self) -> None:
        """Server shutdown (its work was ended by the tracker's cancel): stop watching."""
        if self._poller is not None:
            self._poller.cancel()
        for launch in list(self.launches.values()):
            self._unwatch(launch)


def contain(launch: Launch) -> None:
    """Give the kernel a cgroup of its own and move it in with what it started so far."""
    cgroup = Cgroup.create(f"kernel-{launch.cookie}")
    if cgroup is None:
        return
    if cgroup.add_tree(launch.proc.pid):
        launch.cgroup, launch.contained = cgroup, True
    else:
        cgroup.remove()


def _start_tick(pid: int) -> int:
    """When a process started, in clock ticks since boot (``/proc/<pid>/stat`` field 22);
    a huge number when unknown (it is then no helper)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        return int(stat[stat.rindex(b")") + 2 :].split(b" ")[19])
    except (OSError, ValueError, IndexError):
        return 1 << 62


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None
