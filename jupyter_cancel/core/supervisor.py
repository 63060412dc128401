"""The plumbing under the registry: process trees watched (their roots' exits, the death
watchdog's records), ended together (one SIGTERM pass, one wait, escalation), their
leftovers swept and their cgroups released.

The registry originates and records (operations, selection, states, events); this only
handles the trees of the operations it is given, and reports each end through the one
callback it was given (``ended``: the registry's record of an exit). No reference back to
the registry, as with ``Adoptions`` and the ``EventBus``; it shares the registry's lock.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from .cgroup import Cgroup
from .model import Policy
from .monitor import Monitor
from .operation import Operation, Runner
from .proctree import Termination, Tree, carriers_since, spawn, terminate
from .runners import CapturedRunner, ProcessRunner, TreeRunner, root_identity
from .sidetable import side

log = logging.getLogger(__name__)

#: Captured processes are announced to subscribers once they lived this long (seconds).
ANNOUNCE_AFTER = 0.5


class Ended(Protocol):
    """How the supervisor reports a tree's end: ``returncode`` None when no status was kept;
    ``cancelled`` when a cancel ended it; ``forget`` False while the watchdog should keep its
    record (leftovers still to sweep); ``release`` False when its cgroup goes later."""

    def __call__(
        self,
        op: Operation,
        returncode: int | None,
        *,
        cancelled: bool,
        forget: bool = True,
        release: bool = True,
    ) -> None: ...


class Supervisor:
    """The process trees of one registry's operations."""

    def __init__(
        self,
        lock: threading.RLock,
        *,
        ended: Ended,
        announce: Callable[[Operation], None],
        later: Callable[[float, Callable[[], None]], None],
        live: Callable[[], list[Operation]],
        watchdog: bool,
    ) -> None:
        self._lock = lock
        self._ended = ended
        self._announce = announce
        self._later = later
        self._live = live
        self._use_watchdog = watchdog
        self._watchdog: Any = None
        self._monitor: Monitor | None = None
        self._workers: ThreadPoolExecutor | None = None
        self.closed = False

    @staticmethod
    def takes(runner: Runner | None) -> bool:
        """Whether ``runner`` runs a process tree (this supervises it)."""
        return isinstance(runner, TreeRunner)

    # -- starting and watching ---------------------------------------------------------
    def spawn(
        self,
        op: Operation,
        argv: Sequence[str],
        *,
        cwd: str | os.PathLike[str] | None,
        env: Mapping[str, str] | None,
    ) -> ProcessRunner:
        """Start ``op``'s process tree (own session, cookie, cgroup where writable); what runs it.
        ``OSError`` if it could not start (nothing is left behind)."""
        cgroup = Cgroup.create(op.id)
        # Made before the spawn, not between it and the watch (starting its thread is a wait an
        # interrupt could land in, leaving a KeyboardInterrupt where ``run`` says ``Cancelled``).
        self.monitor()
        try:
            popen = spawn(argv, op_id=op.id, cwd=cwd, env=env, cgroup=cgroup)
        except OSError:
            if cgroup is not None:
                cgroup.remove()
            raise
        return ProcessRunner(popen, Tree(op.id, root_identity(popen.pid), op.grace, cgroup, owns_root=True))

    def monitor(self) -> Monitor:
        monitor = self._monitor
        if monitor is None:
            with self._lock:
                if self._monitor is None:
                    self._monitor = Monitor(self._on_exit)
                monitor = self._monitor
        return monitor

    def watch(self, op: Operation, runner: Runner, pidfd: int | None = None) -> None:
        """Watch ``op``'s tree (its exit, the watchdog's record); a cancel that came first ends
        it now. ``pidfd``: the root's, if pinned already (copied, never opened again here)."""
        assert isinstance(runner, TreeRunner)
        self.rewatch(op, runner)
        if isinstance(runner, ProcessRunner):
            # Announced (with its root: a server can act on it) before the monitor can see it end.
            self._announce(op)
            self.monitor().watch(op, runner)
        elif runner.watched:  # (not watched: another owner's tree, only ended here)
            monitor = self.monitor()
            # Captured work is announced only once it lived ANNOUNCE_AFTER: a library's quick
            # `git rev-parse` must not flood the panel and the event stream (a trigger that
            # hits it first still ends it, and announces it then).
            self._later(ANNOUNCE_AFTER, lambda: self._announce(op))
            if runner.pid is not None:
                monitor.on_exit_of([runner.pid], lambda: self._captured_root_exited(op), pinned=pidfd)
            else:
                first = side().call(lambda: list(runner.tree.collect()))
                monitor.on_exit_of(first, lambda: self._captured_root_exited(op))
        if op.cancel_requested:
            self.end([op])

    def rewatch(self, op: Operation, runner: TreeRunner) -> None:
        """The tree's watchdog record (again, once a captured tree has its cgroup)."""
        if self._use_watchdog and op.policy is not Policy.DETACH:
            self.watchdog().register(op, runner)

    def _on_exit(self, op: Operation, returncode: int) -> None:
        """The monitor saw a root exit."""
        if op.cancel_requested:
            return  # the canceller records the end once the whole tree is gone
        sweep = op.policy is not Policy.DETACH
        # The watchdog keeps the tree until its leftovers are swept: an owner killed right after
        # its tree's root (Ray kills a dying worker's children first) leaves them to it.
        self._ended(op, returncode, cancelled=False, forget=not sweep)
        if sweep:
            # Leftovers of a finished tree (`cmd &`, daemons) are ended like Jenkins' ProcessTreeKiller.
            self.pool().submit(self._sweep_leftovers, op)

    def _captured_root_exited(self, op: Operation) -> None:
        """A captured tree's root exited: the operation lasts while anything of its tree
        lives (``cmd &`` through ``os.system``, a daemon a library started)."""
        runner = op.runner
        assert isinstance(runner, CapturedRunner)
        if op.done or op.cancel_requested:
            return  # the canceller records the end
        left = side().call(self._left_of, op.id, runner)  # (/proc and cgroup reads: side thread)
        if left:
            self.monitor().on_exit_of(left, lambda: self._captured_root_exited(op))
            return
        self._ended(op, runner.poll(), cancelled=False)
        self.release(runner)

    @staticmethod
    def _left_of(op_id: str, runner: CapturedRunner) -> list[int]:
        """What still runs of a captured tree whose root exited."""
        if runner.cgroup is not None and runner.joined_alive:
            # Cheap on this hot path (every captured process ends here): its cgroup. A child
            # forked before the root joined it is still found by a cancel's full collect.
            return [pid for pid in runner.cgroup.pids() if pid != runner.pid]
        if runner.pid is None:
            return list(runner.tree.collect())
        # Its descendants were reparented when it died: they carry its cookie, and they
        # started after it (a scan of the newer pids only).
        left = [pid for pid in carriers_since(op_id, runner.pid) if pid != runner.pid]
        if runner.cgroup is not None:
            left += [pid for pid in runner.cgroup.pids() if pid != runner.pid and pid not in left]
        return left

    def _sweep_leftovers(self, op: Operation) -> None:
        runner = op.runner
        assert isinstance(runner, ProcessRunner)
        try:
            outcome = terminate([runner.tree])
            if outcome.gone.get(op.id):
                log.info("operation %s left processes %s: terminated", op.id, outcome.gone[op.id])
            self.release(runner)
        finally:
            self.forget(op)

    # -- ending ------------------------------------------------------------------------
    def end(self, ops: Sequence[Operation], *, wait: bool = True) -> None:
        """End the trees of ``ops`` together: SIGTERM goes out now, in the caller; waiting and
        escalating happen here with ``wait``, else on a worker."""
        termination = self._begin(ops)
        if wait:
            self._complete(ops, termination)
        else:
            self.pool().submit(self._complete, ops, termination)

    def _begin(self, ops: Sequence[Operation]) -> Termination:
        trees = []
        for op in ops:
            runner = op.runner
            assert isinstance(runner, TreeRunner)
            returncode = runner.poll() if not runner.captured else None
            if returncode is not None:
                # It ended on its own just before the cancel: that is a completion. (A captured
                # tree lives on after its root: its leftovers are what the cancel ends.)
                self._ended(op, returncode, cancelled=False)
            trees.append(runner.tree)
        return Termination(trees).signal()

    def _complete(self, ops: Sequence[Operation], termination: Termination) -> None:
        outcome = termination.finish()
        for op in ops:
            runner = op.runner
            assert isinstance(runner, TreeRunner)
            alive = outcome.alive.get(op.id, [])
            if alive:
                op.unkillable = alive
                log.warning("operation %s: pids %s survived SIGKILL (uninterruptible?)", op.id, alive)
            self._ended(op, runner.returncode(0 if alive else 1.0), cancelled=True, release=False)
        # The tree is gone and the operations ended: removing their cgroups and telling the
        # watchdog to forget them is bookkeeping the canceller need not wait for — unless the
        # registry is closing (at interpreter exit no worker may start any more).
        if self.closed:
            self._after_cancel(ops)
        else:
            self.pool().submit(self._after_cancel, ops)

    def _after_cancel(self, ops: Sequence[Operation]) -> None:
        for op in ops:
            self.release_of(op)
            self.forget(op)

    def release(self, runner: TreeRunner) -> None:
        if runner.cgroup is not None:
            runner.cgroup.remove()

    def release_of(self, op: Operation) -> None:
        """Remove ``op``'s cgroup, if it has a tree with one."""
        if isinstance(op.runner, TreeRunner):
            self.release(op.runner)

    def forget(self, op: Operation) -> None:
        """The watchdog drops ``op``'s record (its tree is gone)."""
        if self._watchdog is not None and isinstance(op.runner, TreeRunner):
            self._watchdog.forget(op.id)

    def pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._workers is None:
                self._workers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="jupyter_cancel")
            return self._workers

    # -- the death watchdog ----------------------------------------------------------------
    @property
    def uses_watchdog(self) -> bool:
        return self._use_watchdog

    def watchdog(self) -> Any:
        """The death watchdog's client, started on first use."""
        with self._lock:
            if self._watchdog is None:
                from .watchdog_client import WatchdogClient

                self._watchdog = WatchdogClient.open(on_lost=self._watchdog_lost)
            return self._watchdog

    def start_watchdog(self, wait: float | None = None) -> bool:
        """Start the watchdog now (not at the first process); with ``wait``, block up to that
        many seconds until it is up. True if it is (or, without ``wait``, was started)."""
        if not self._use_watchdog:
            return False
        client = self.watchdog()
        return client.wait_ready(wait) if wait is not None else True

    def _watchdog_lost(self, lost: Any) -> None:
        """The watchdog died before its owner: start another and register the live trees again."""
        from .watchdog_client import WatchdogClient

        with self._lock:
            if self.closed or self._watchdog is not lost:
                return
            self._watchdog = client = WatchdogClient.start(on_lost=self._watchdog_lost)
            ops = [op for op in self._live() if self.takes(op.runner) and op.policy is not Policy.DETACH]
        for op in ops:
            assert isinstance(op.runner, TreeRunner)
            client.register(op, op.runner)
        if not client.wait_ready(5.0):
            log.warning("the new watchdog %d did not come up", client.pid)

    def watchdog_health(self) -> dict[str, Any]:
        """Whether the death watchdog is up (``pid`` None: not started, or not used)."""
        client = self._watchdog
        if client is None:
            return {"used": self._use_watchdog, "pid": None, "alive": False}
        return {
            "used": self._use_watchdog,
            "pid": client.pid,
            "alive": bool(client.alive),
            "shared": client.proc is None,
        }

    def close(self) -> None:
        """The owner is done: its watchdog goes (its trees were ended before)."""
        if self._watchdog is not None:
            self._watchdog.close()
