"""The registry: every live operation of one owner, selected and cancelled as a set.

Thread-safe (one lock guards every state change); callable from a kernel's main thread,
its control thread, background threads and the asyncio loop. Cancelling never waits on
a subscriber: events go through a queue to a dispatcher thread.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

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
from .runners import Runner
from .selector import Selector
from .supervisor import ANNOUNCE_AFTER, Supervisor

log = logging.getLogger(__name__)


class Registry:
    """All operations of one owner (a kernel, or a plain Python process)."""

    def __init__(self, *, grace: float = DEFAULT_GRACE, watchdog: bool = True) -> None:
        self.grace = to_grace(grace)
        self._lock = threading.RLock()
        #: What it knows of its operations: live, recent, remembered cancels, waiters.
        self._book = Ledger(self._lock, ended=self._ended, claim=lambda: self.adoptions.claim())
        #: Subscribers and the thread that tells them (events are queued under our lock).
        self._bus = EventBus(self._lock)
        #: The plumbing of its process trees: spawning, watching, ending, sweeping, the death
        #: watchdog (``starts`` spawns through it).
        self.trees = Supervisor(
            self._lock,
            ended=self._finish_exit,
            announce=self._bus.announce,
            later=lambda delay, fn: self._timers().call_later(delay, fn),
            live=self._book.operations,
            watchdog=watchdog,
        )
        #: Captured children between their spawn and their watching (``starts.adopt_process``).
        self.adoptions = Adoptions(
            self._lock,
            later=lambda delay, fn: self._timers().call_later(delay, fn),
            attach=self._attach,
            # (A child found gone after a cancel chose it, killed by the cell's cleanup: a cancel.)
            ended=lambda op, status: self._finish_exit(op, status, cancelled=op.cancel_requested),
            release=self.trees.release,
            watch=self.trees.rewatch,
            new=self.new,
            register=self.register,
            record=lambda expected: not self.closed and self._book.record(expected),  # (made if read)
        )
        self._book.make = self.adoptions.made_ended  # (a spawn recorded ended, made when read)
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
        self,
        op: Operation,
        *,
        supersede_reason: str = Reason.SUPERSEDED,
        announce: bool = True,
        quiet: bool = False,
    ) -> bool:
        """Make ``op`` live. False if it was cancelled before it could start.

        With ``op.key`` set, live work under the same key is cancelled first and waited
        for (bounded: grace + 1 s), so two copies never run at once. ``quiet`` (captured
        work): never told of unless announced later or chosen by a cancel.
        """
        if op.key is not None:
            old = [o for o in self.select(Selector(key=op.key)) if o is not op]
            if old:
                self.cancel_ops(old, supersede_reason, wait=True)
        if quiet:
            self._bus.hush(op)
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
        if self.trees.takes(runner):
            self.trees.watch(op, runner, pidfd)

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
        self.register(op, announce=False, quiet=True)
        self._timers().call_later(after, lambda: self._bus.announce(op))

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
        self.adoptions.now_among([op for op in ops if force or applies(op.policy, why.source)])
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
        procs = [op for op in chosen if self.trees.takes(op.runner)]
        others = [op for op in chosen if not self.trees.takes(op.runner)]
        for op in others:
            if op.runner is None:
                self.finish(op, State.CANCELLED)  # pending: never started
            else:
                op.runner.request_cancel(op)
        if procs:
            self.trees.end(procs, wait=wait)
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
            self.trees.release_of(op)

    def wait(self, op: Operation, timeout: float | None = None) -> State:
        """Block until ``op`` ends (or ``timeout``); its state."""
        return self._book.wait(op, timeout)

    def finish(self, op: Operation, state: State) -> None:
        """Record the end of ``op`` (runners call this); a second end is ignored."""
        with self._lock:
            if not op.done:
                self._book.end(op, state)
                self.trees.forget(op)

    def _finish_locked(self, op: Operation, state: State, *, forget: bool = True) -> None:
        self._book.end(op, state)
        if forget:
            self.trees.forget(op)

    def _ended(self, op: Operation) -> None:
        """What an end means beyond its record (told by the ledger, under the lock): subscribers
        told, its quiet mark and its pending adoption dropped — each looked at only if there
        is any (the end of an instant operation stays cheap)."""
        if self._bus.active or self._bus.hushed:
            self._bus.ended(op)
        if self.adoptions.pending:
            self.adoptions.drop(op.id)

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
    def _timers(self) -> _Timer:
        with self._lock:
            if self._timer is None:
                self._timer = _Timer(self)
            return self._timer

    def start_watchdog(self, wait: float | None = None) -> bool:
        """Start the watchdog now (not at the first process); with ``wait``, block up to that
        many seconds until it is up. True if it is (or, without ``wait``, was started)."""
        return self.trees.start_watchdog(wait)

    def watchdog_health(self) -> dict[str, Any]:
        """Whether the death watchdog is up (``pid`` None: not started, or not used)."""
        return self.trees.watchdog_health()

    def health(self, now: float | None = None) -> dict[str, Any]:
        """The registry's own state: watchdog, running work, work past its grace + 1 s since its
        cancel (``overdue``), work with processes that survived SIGKILL (``unkillable``).
        ``now`` (monotonic seconds) lets a caller drive the clock."""
        ledger = self._book.health(time.monotonic() if now is None else now)
        return {"watchdog": self.watchdog_health(), "running": len(self.operations()), **ledger}

    def close(self, reason: str | CancelReason = Reason.KERNEL_SHUTDOWN) -> list[Operation]:
        """Cancel everything ``reason`` applies to (not ``detach``) and refuse new work."""
        with self._lock:
            self.adoptions.claim()  # (registered while it still can be, to be cancelled below)
            self.closed = self.trees.closed = True
        cancelled = self.cancel_all(reason, wait=True)
        self.trees.close()
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
                registry.trees.pool().submit(registry.cancel_ops, [op], Reason.TIMEOUT, wait=True, force=True)

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
