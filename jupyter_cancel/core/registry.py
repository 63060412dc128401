"""The registry: every live operation of one owner, selected and cancelled as a set.

Thread-safe (one lock guards every state change); callable from a kernel's main thread,
its control thread, background threads and the asyncio loop. Cancelling never waits on
a subscriber: events go through a queue to a dispatcher thread.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .adoption import Adoptions
from .errors import Cancelled
from .events import BatchSubscriber, EventBus, Subscriber
from .ledger import Ledger
from .model import (
    DEFAULT_GRACE,
    CancelReason,
    Policy,
    Reason,
    State,
    applies,
    to_grace,
    to_policy,
    to_timeout,
)
from .operation import Operation, new_id
from .proctree import is_protected
from .runners import Runner, TaskRunner
from .scope import CancelScope
from .selector import Selector
from .supervisor import ANNOUNCE_AFTER, Supervisor

log = logging.getLogger(__name__)
T = TypeVar("T")


class Registry:
    """All operations of one owner (a kernel, or a plain Python process)."""

    def __init__(self, *, grace: float = DEFAULT_GRACE, watchdog: bool = True) -> None:
        self.grace = to_grace(grace)
        self._lock = threading.RLock()
        #: What it knows of its operations: live, recent, remembered cancels, waiters.
        self._book = Ledger(self._lock, ended=self._ended)
        #: Captured operations (quiet until ANNOUNCE_AFTER), while live.
        self._captured: set[str] = set()
        #: The plumbing of its process trees: watching, ending, sweeping, the death watchdog.
        self._trees = Supervisor(
            self._lock,
            ended=self._finish_exit,
            announce=self._announce,
            later=lambda delay, fn: self._timers().call_later(delay, fn),
            live=self._book.operations,
            watchdog=watchdog,
        )
        #: Captured children between their spawn and their watching (``adopt(defer=True)``).
        self._adoptions = Adoptions(
            self._lock,
            later=lambda delay, fn: self._timers().call_later(delay, fn),
            attach=self._attach,
            # (An adoption that finds its child gone after a cancel chose it — a stop raised into
            # the cell first, whose own cleanup killed the child — records that cancel.)
            ended=lambda op, status: self._finish_exit(op, status, cancelled=op.cancel_requested),
            release=self._trees.release,
            watch=self._trees.rewatch,
        )
        #: Subscribers and the thread that tells them (events are queued under our lock).
        self._bus = EventBus(self._lock, quiet=self._quiet)
        self._timer: _Timer | None = None
        self.closed = False

    # -- creating and registering -------------------------------------------------
    def new(
        self,
        *,
        name: str,
        kind: str,
        policy: object = Policy.CANCEL,
        grace: object = None,
        timeout: object = None,
        key: str | None = None,
        owner: Mapping[str, Any] | None = None,
        op_id: str | None = None,
    ) -> Operation:
        """A pending operation (validated, not yet registered)."""
        policy = to_policy(policy)
        return Operation(
            self,
            name=name,
            kind=kind,
            policy=policy,
            grace=self.grace if grace is None else to_grace(grace),
            timeout=to_timeout(timeout),
            key=key,
            owner=owner,
            op_id=op_id or new_id(detached=policy is Policy.DETACH),
        )

    def register(
        self, op: Operation, *, supersede_reason: str = Reason.SUPERSEDED, announce: bool = True
    ) -> bool:
        """Make ``op`` live. False if it was cancelled before it could start.

        With ``op.key`` set, live work under the same key is cancelled first and waited
        for (bounded: grace + 1 s), so two copies never run at once.
        """
        if op.key is not None:
            old = [o for o in self.select(Selector(key=op.key)) if o is not op]
            if old:
                self.cancel_ops(old, supersede_reason, wait=True)
        with self._lock:
            if self.closed:
                op.reason = Reason.KERNEL_SHUTDOWN
                self._finish_locked(op, State.CANCELLED)
                return False
            remembered = self._book.add(op)
            if remembered is not None:  # a cancel of this id came before it
                op.cancel_requested_at = time.monotonic()
                op.reason, op.message = remembered.source, remembered.message
                self._finish_locked(op, State.CANCELLED)
                return False
            op.state = State.RUNNING
            op.started = time.time()
        if op.timeout is not None:
            self._timers().add(op)
        if announce and self._bus.active:
            self._bus.emit("started", op)
        return True

    def attach(self, op: Operation, runner: Runner) -> None:
        """Give ``op`` what runs it. A process tree is watched (exit, output, the death
        watchdog) and, if a cancel came meanwhile, terminated at once."""
        self._attach(op, runner, None)

    def _attach(self, op: Operation, runner: Runner, pidfd: int | None) -> None:
        if op.runner is not None:
            raise RuntimeError(f"operation {op.id} already has a runner")
        op.runner = runner
        if self._trees.takes(runner):
            self._trees.watch(op, runner, pidfd)

    def launch(
        self,
        runner: Callable[[Operation], Runner],
        *,
        name: str,
        kind: str,
        policy: object = Policy.CANCEL,
        grace: object = None,
        owner: Mapping[str, Any] | None = None,
        quiet_for: float | None = None,
    ) -> Operation:
        """Start an operation run by any ``Runner`` (the public way, for adapters: Dask,
        Spark): ``runner(op)`` makes what runs it; the operation is live when this returns.
        ``quiet_for``: announced only if it still runs that many seconds from now."""
        op = self.new(name=name, kind=kind, policy=policy, grace=grace, owner=owner)
        self.attach(op, runner(op))
        if quiet_for is None:
            self.register(op)
        else:
            self.register_quietly(op, after=quiet_for)
        return op

    def register_quietly(self, op: Operation, after: float = ANNOUNCE_AFTER) -> None:
        """Register ``op``, announced only if it still runs ``after`` seconds from now (a
        trigger that hits it first announces it then): work that is mostly short — a captured
        process, a cell run's Spark jobs — must not flood the panel and the event stream."""
        with self._lock:
            self._captured.add(op.id)
        self.register(op, announce=False)
        self._timers().call_later(after, lambda: self._announce(op))

    def _quiet(self, op: Operation) -> bool:
        return op.id in self._captured and not op.cancel_requested

    def _announce(self, op: Operation) -> None:
        if not op.done and self._bus.active:
            self._bus.emit("started", op)

    def expect(
        self,
        *,
        name: str,
        op_id: str | None = None,
        policy: object = Policy.CANCEL,
        grace: object = None,
        owner: Mapping[str, Any] | None = None,
    ) -> Operation:
        """Register the operation of a process about to be started by some other route (its
        ``adopt`` follows): a trigger between the spawn and the adoption still reaches it."""
        op = self.new(name=name[:200], kind="process", policy=policy, grace=grace, owner=owner, op_id=op_id)
        with self._lock:
            self._captured.add(op.id)
        self.register(op, announce=False)
        return op

    def adopt(
        self,
        pid: int,
        *,
        name: str = "",
        op: Operation | None = None,
        popen: Any = None,
        policy: object = Policy.CANCEL,
        grace: object = None,
        owner: Mapping[str, Any] | None = None,
        cgroup: bool = True,
        defer: bool = False,
    ) -> Operation:
        """Take a running child process (and its tree) under the registry, started by any
        route: the same triggers and termination as ``start``, but its root is never reaped
        here. ``op`` is its ``expect``ed operation, if any (cancelled meanwhile: the tree is
        ended at once). ``KeyError`` if there is no such process, or if ``pid`` names this
        process or one of its ancestors (never ours to end).

        ``defer`` (capture): the child is watched only if it lives ``ADOPT_AFTER`` — most
        captured processes end within milliseconds and then cost nothing more. A ``Popen``'s
        child is not even pinned meanwhile: this process is its parent, so its pid stays its
        own until reaped, and only its ``Popen`` reaps it (whose returncode then says so; a
        ``waitid`` names only our own unreaped children). A child of another route (``fork``,
        ``posix_spawn``) is pinned now by a pidfd. A trigger meanwhile adopts it at once; a
        death of this process meanwhile is covered by the watchdog's cookie sweep."""
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or is_protected(pid):
            if op is not None:
                self.finish(op, State.FAILED)
            raise KeyError(pid)
        if op is None:
            op = self.expect(name=name or f"pid {pid}", policy=policy, grace=grace, owner=owner)
        if not (defer and self._adoptions.defer(op, pid, popen, cgroup)):
            self._adoptions.now(op, pid, popen, cgroup)
        return op

    # -- starting work ----------------------------------------------------------------
    def start(
        self,
        argv: Sequence[str],
        *,
        name: str,
        policy: object = Policy.CANCEL,
        grace: object = None,
        timeout: object = None,
        key: str | None = None,
        owner: Mapping[str, Any] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        prepare: Callable[[Operation], None] | None = None,
    ) -> Operation:
        """Start ``argv`` as a process tree (own session, cookie, cgroup where writable) and
        return its running operation. ``prepare(op)`` runs before the process starts (attach
        output listeners there). A spawn failure ends the operation ``failed`` and raises."""
        op = self.new(
            name=name[:200], kind="process", policy=policy, grace=grace, timeout=timeout, key=key, owner=owner
        )
        if prepare is not None:
            prepare(op)
        if not self.register(op, announce=False) or op.cancel_requested:
            self.finish(op, State.CANCELLED)
            return op
        try:
            runner = self._trees.spawn(op, argv, cwd=cwd, env=env)
        except OSError as err:
            op.error = str(err)
            self.finish(op, State.FAILED)
            raise
        self.attach(op, runner)
        return op

    def scope(
        self,
        name: str,
        *,
        kind: str = "scope",
        policy: object = Policy.CANCEL,
        grace: object = None,
        timeout: object = None,
        owner: Mapping[str, Any] | None = None,
    ) -> CancelScope:
        """A ``CancelScope`` whose operation registers when the block is entered."""
        op = self.new(name=name, kind=kind, policy=policy, grace=grace, timeout=timeout, owner=owner)

        def enter(scope: CancelScope) -> None:
            self.attach(op, scope)
            self.register(op)

        return CancelScope(op, enter)

    def task(
        self,
        coro: Coroutine[Any, Any, T],
        loop: asyncio.AbstractEventLoop,
        *,
        name: str,
        policy: object = Policy.CANCEL,
        grace: object = None,
        owner: Mapping[str, Any] | None = None,
    ) -> asyncio.Task[T]:
        """Schedule ``coro`` on ``loop`` as an operation; the Task (cancelled if a cancel came first)."""

        made: list[asyncio.Task[T]] = []

        def run(op: Operation) -> TaskRunner:
            made.append(loop.create_task(coro, name=f"jupyter_cancel:{op.id}"))
            runner = TaskRunner(made[0], loop)
            runner.watch(op)
            return runner

        op = self.launch(run, name=name, kind="task", policy=policy, grace=grace, owner=owner)
        if op.done:  # cancelled before it could start (a closed registry, a remembered cancel)
            made[0].cancel()
        return made[0]

    # -- selecting -------------------------------------------------------------------
    def get(self, op_id: str) -> Operation:
        """The operation with this id, live or recent; ``KeyError`` naming the id if unknown."""
        return self._book.get(op_id)

    def operations(self, *, include_done: bool = False) -> list[Operation]:
        return self._book.operations(include_done=include_done)

    def select(self, selector: Selector) -> list[Operation]:
        """Live operations ``selector`` admits (an empty one: none; ``all=True``: every one)."""
        return self._book.select(selector)

    def reassign(self, client_session: str, to: str) -> list[Operation]:
        """The live work of ``client_session`` now belongs to ``to`` (a reloaded page took over
        the work of the page it replaces); subscribers are told."""
        with self._lock:
            moved = [op for op in self._book.operations() if op.client_session == client_session]
            for op in moved:
                op.client_session = to
        for op in moved:
            self.changed(op, "progress")
        return moved

    # -- cancelling ------------------------------------------------------------------
    def cancel(
        self,
        op_id: str,
        reason: str | CancelReason = Reason.USER,
        *,
        wait: bool = True,
        remember: bool = False,
    ) -> list[Operation]:
        """Cancel one operation by id; return it if this call cancelled it.

        Unknown id: ``KeyError`` naming it, unless ``remember`` (then the cancel is kept
        for ``TOMBSTONE_TTL`` seconds and applied when that id registers).
        An explicit cancel by id applies whatever the policy.
        """
        why = CancelReason.of(reason)
        with self._lock:  # (an id registered between the look and the remembering: missed)
            op = self._book.live(op_id)
            if op is None:
                if remember:
                    self._book.remember(op_id, why)
                    return []
                self.get(op_id)  # KeyError for an id never seen
                return []  # known but already done: idempotent
        return self.cancel_ops([op], why, wait=wait, force=True)

    def cancel_where(
        self, selector: Selector, reason: str | CancelReason = Reason.USER, *, wait: bool = True
    ) -> list[Operation]:
        """Cancel the live operations ``selector`` admits that ``reason`` applies to."""
        return self.cancel_ops(self.select(selector), CancelReason.of(reason), wait=wait)

    def cancel_all(self, reason: str | CancelReason = Reason.USER, *, wait: bool = True) -> list[Operation]:
        return self.cancel_where(Selector(all=True), reason, wait=wait)

    def cancel_ops(
        self,
        ops: Sequence[Operation],
        reason: str | CancelReason,
        *,
        wait: bool = True,
        force: bool = False,
    ) -> list[Operation]:
        """Request cancellation of ``ops``; with ``wait``, return when their work is gone.

        Idempotent: operations already done or already being cancelled are skipped.
        Process trees are terminated together (one SIGTERM pass, one wait).
        """
        return self.end_requested(self.request_cancel(ops, reason, force=force), wait=wait)

    def request_cancel(
        self, ops: Sequence[Operation], reason: str | CancelReason, *, force: bool = False
    ) -> list[Operation]:
        """The first half of ``cancel_ops``: mark the operations it would end as being
        cancelled (``cancel_requested`` goes out) and end nothing yet — ``end_requested`` does.
        Meanwhile an end of their work reads as their cancel (a cell stop raises into the cell
        first, and the cell's own cleanup may kill its child before the registry does)."""
        why = CancelReason.of(reason)
        # Captured processes not yet watched are adopted first (a trigger in their first ms).
        self._adoptions.now_among([op for op in ops if force or applies(op.policy, why.source)])
        chosen = self._book.choose(ops, why, force)
        for op in chosen:
            log.info("cancelling %s (%s): %s", op.id, op.name, why)
            if self._bus.active:
                self._bus.emit("cancel_requested", op)
        return chosen

    def end_requested(self, chosen: Sequence[Operation], *, wait: bool = True) -> list[Operation]:
        """The second half of ``cancel_ops``: end the work of operations ``request_cancel``
        chose; with ``wait``, return when it is gone."""
        if not chosen:
            return []
        procs = [op for op in chosen if self._trees.takes(op.runner)]
        others = [op for op in chosen if not self._trees.takes(op.runner)]
        for op in others:
            if op.runner is None:
                self.finish(op, State.CANCELLED)  # pending: never started
            else:
                op.runner.request_cancel(op)
        if procs:
            self._trees.end(procs, wait=wait)
        if wait:
            for op in others:
                if op.runner is not None and not op.runner.wait_gone(op, op.grace):
                    log.warning("operation %s did not stop within %.1fs of its cancel", op.id, op.grace)
        return list(chosen)

    # -- ending ----------------------------------------------------------------------
    def _finish_exit(
        self,
        op: Operation,
        returncode: int | None,
        *,
        cancelled: bool,
        forget: bool = True,
        release: bool = True,
    ) -> None:
        with self._lock:
            if op.done:
                return
            op.returncode = returncode
            if cancelled:
                state = State.CANCELLED
            else:
                # (None: a captured root whose caller reaped it and kept no status.)
                state = State.COMPLETED if returncode in (0, None) else State.FAILED
            self._finish_locked(op, state, forget=forget and release)
        if release and cancelled:
            self._trees.release_of(op)

    def wait(self, op: Operation, timeout: float | None = None) -> State:
        """Block until ``op`` ends (or ``timeout``); its state."""
        return self._book.wait(op, timeout)

    def finish(self, op: Operation, state: State) -> None:
        """Record the end of ``op`` (runners call this); a second end is ignored."""
        with self._lock:
            if not op.done:
                self._finish_locked(op, state)

    def _finish_locked(self, op: Operation, state: State, *, forget: bool = True) -> None:
        self._book.end(op, state)
        if forget:
            self._trees.forget(op)

    def _ended(self, op: Operation) -> None:
        """What an end means beyond its record (told by the ledger, under the lock)."""
        if self._bus.active:
            self._bus.emit("ended", op)
        self._captured.discard(op.id)
        self._adoptions.drop(op.id)

    # -- events ----------------------------------------------------------------------
    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber(event, operation_json)`` for every change; returns an unsubscribe."""
        return self._bus.subscribe(subscriber)

    def subscribe_batch(self, subscriber: BatchSubscriber) -> Callable[[], None]:
        """Call ``subscriber([(event, operation_json), ...])`` with every change, in order, as
        many at a time as queued up meanwhile (``events.BATCH_MAX``): one message per batch
        keeps a burst of instant operations from overflowing a bounded channel (iopub)."""
        return self._bus.subscribe_batch(subscriber)

    def changed(self, op: Operation, event: str) -> None:
        """Tell subscribers that ``op`` changed (``progress``)."""
        if self._bus.active:
            self._bus.emit(event, op)

    # -- helpers ---------------------------------------------------------------------
    def _pool(self) -> ThreadPoolExecutor:
        return self._trees.pool()

    def _timers(self) -> _Timer:
        with self._lock:
            if self._timer is None:
                self._timer = _Timer(self)
            return self._timer

    def start_watchdog(self, wait: float | None = None) -> bool:
        """Start the watchdog now (not at the first process); with ``wait``, block up to that
        many seconds until it is up. True if it is (or, without ``wait``, was started)."""
        return self._trees.start_watchdog(wait)

    def watchdog_health(self) -> dict[str, Any]:
        """Whether the death watchdog is up (``pid`` None: not started, or not used)."""
        return self._trees.watchdog_health()

    def health(self, now: float | None = None) -> dict[str, Any]:
        """The registry's own state: watchdog, running work, work past its grace + 1 s since its
        cancel (``overdue``), work with processes that survived SIGKILL (``unkillable``).
        ``now`` (monotonic seconds) lets a caller drive the clock."""
        ledger = self._book.health(time.monotonic() if now is None else now)
        return {"watchdog": self.watchdog_health(), "running": len(self.operations()), **ledger}

    def close(self, reason: str | CancelReason = Reason.KERNEL_SHUTDOWN) -> list[Operation]:
        """Cancel everything ``reason`` applies to (not ``detach``) and refuse new work."""
        with self._lock:
            self.closed = self._trees.closed = True
        cancelled = self.cancel_all(reason, wait=True)
        self._trees.close()
        return cancelled


class _Timer:
    """Fires operation timeouts and delayed calls: one thread sleeping until the next deadline."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cond = threading.Condition()
        self._seq = 0
        threading.Thread(target=self._run, name="jupyter_cancel-timeouts", daemon=True).start()

    def add(self, op: Operation) -> None:
        assert op.timeout is not None
        registry = self._registry

        def fire() -> None:
            if not op.done:
                registry._pool().submit(registry.cancel_ops, [op], Reason.TIMEOUT, wait=True, force=True)

        self.call_later(op.timeout, fire)

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        with self._cond:
            self._seq += 1
            item = (time.monotonic() + delay, self._seq, fn)
            heapq.heappush(self._heap, item)
            if self._heap[0] is item:
                self._cond.notify()  # only a new earliest deadline needs the thread awake

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, fn = heapq.heappop(self._heap)
            try:
                fn()
            except (Exception, Cancelled):
                log.exception("timer callback failed")
