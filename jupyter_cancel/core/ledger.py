"""The registry's record of its operations: the live ones, the recent ones, cancels kept for
ids not registered yet, and who waits for an end.

The registry decides (what starts, what a cancel chooses); this only writes down and reads
back, under the registry's lock, and tells the one callback it was given (``ended``) of each
end while that lock is held. No reference back to the registry, as with the ``Supervisor``.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence

from .adoption import Expected
from .model import CancelReason, State, applies
from .operation import Operation
from .proctree import running
from .selector import Selector

#: How long a cancel for an id not (yet) registered is remembered, and how many.
TOMBSTONE_TTL = 60.0
TOMBSTONE_MAX = 4096
#: Finished operations kept for listing (most recent).
HISTORY = 200
#: A blocked ``wait`` wakes this often (seconds), so that an asynchronous exception lands.
WAIT_SLICE = 0.05


class Ledger:
    """Every operation one registry knows of, live or recently ended."""

    def __init__(
        self,
        lock: threading.RLock,
        *,
        ended: Callable[[Operation], None],
        claim: Callable[[], None] = lambda: None,
    ) -> None:
        self._lock = lock
        self._ended = ended
        #: Called (under the lock) before every read: work not recorded yet is recorded first
        #: (the registry's expected spawns, made operations in a batch).
        self._claim = claim
        #: Makes the operation of a spawn ``record``-ed ended (the registry's adoptions' ``made_ended``).
        self.make: Callable[[Expected], Operation] | None = None
        self._live: dict[str, Operation] = {}
        #: The recent ended operations, oldest first — some still as the spawn they were
        #: (``record``), made operations when the history is read (``_recent``).
        self._history: collections.deque[Operation | Expected] = collections.deque(maxlen=HISTORY)
        self._unmade = False
        self._tombstones: collections.OrderedDict[str, tuple[float, CancelReason]] = collections.OrderedDict()
        self._waiters: dict[str, threading.Event] = {}

    # -- recording -----------------------------------------------------------------
    def add(self, op: Operation) -> CancelReason | None:
        """Make ``op`` live (the caller holds the lock) — unless a cancel of its id is
        remembered: then that cancel, and ``op`` is not added."""
        tomb = self._tombstones.pop(op.id, None)
        if tomb is not None and tomb[0] > time.monotonic():
            return tomb[1]
        self._live[op.id] = op
        return None

    def record(self, expected: Expected) -> bool:
        """(The caller holds the lock.) ``expected`` ended, its operation never made: it goes in
        the history as it is (``_recent`` makes it). False if a cancel of its id is
        remembered, or nothing can make it: its operation must be made and registered."""
        if self.make is None or expected.op_id in self._tombstones:
            return False
        self._history.append(expected)
        self._unmade = True
        return True

    def _recent(self) -> collections.deque[Operation]:
        """(Under the lock.) The history, every entry an operation (made now if recorded unmade)."""
        if self._unmade:
            assert self.make is not None
            make = self.make
            self._history = collections.deque(
                (old if isinstance(old, Operation) else make(old) for old in self._history), maxlen=HISTORY
            )
            self._unmade = False
        return self._history  # type: ignore[return-value]

    def remember(self, op_id: str, reason: CancelReason) -> None:
        """Keep a cancel of an id not registered yet, for ``TOMBSTONE_TTL`` seconds."""
        now = time.monotonic()
        with self._lock:
            self._tombstones[op_id] = (now + TOMBSTONE_TTL, reason)
            while self._tombstones:
                first_id, (expires, _) = next(iter(self._tombstones.items()))
                if expires > now and len(self._tombstones) <= TOMBSTONE_MAX:
                    break
                del self._tombstones[first_id]

    def choose(self, ops: Sequence[Operation], why: CancelReason, force: bool) -> list[Operation]:
        """Those of ``ops`` a cancel for ``why`` ends — live, not being cancelled yet, and
        (unless ``force``) whose policy the trigger applies to — marked as requested."""
        chosen: list[Operation] = []
        now = time.monotonic()
        with self._lock:
            for op in ops:
                if op.done or op.cancel_requested or not (force or applies(op.policy, why.source)):
                    continue
                op.cancel_requested_at = now
                op.reason, op.message = why.source, why.message
                chosen.append(op)
        return chosen

    def end(self, op: Operation, state: State) -> None:
        """Record the end of ``op`` (the caller holds the lock, and ``op`` is not done)."""
        op.state = state
        op.ended = time.time()
        if op.cancel_requested_at is not None:
            op.cancel_latency = time.monotonic() - op.cancel_requested_at
        if self._live.pop(op.id, None) is not None:
            self._history.append(op)
        self._ended(op)
        done = self._waiters.pop(op.id, None)
        if done is not None:
            done.set()

    # -- reading -------------------------------------------------------------------
    def live(self, op_id: str) -> Operation | None:
        with self._lock:
            self._claim()
            return self._live.get(op_id)

    def get(self, op_id: str) -> Operation:
        """The operation with this id, live or recent; ``KeyError`` naming the id if unknown."""
        with self._lock:
            self._claim()
            op = self._live.get(op_id)
            if op is not None:
                return op
            for old in self._recent():
                if old.id == op_id:
                    return old
        raise KeyError(op_id)

    def operations(self, *, include_done: bool = False) -> list[Operation]:
        with self._lock:
            self._claim()
            return (list(self._recent()) if include_done else []) + list(self._live.values())

    def select(self, selector: Selector) -> list[Operation]:
        """Live operations ``selector`` admits (an empty one: none; ``all=True``: every one)."""
        with self._lock:
            self._claim()
            return [op for op in self._live.values() if selector.admits(op)]

    def wait(self, op: Operation, timeout: float | None = None) -> State:
        """Block until ``op`` ends (or ``timeout``); its state."""
        with self._lock:
            if op.done:
                return op.state
            done = self._waiters.get(op.id)
            if done is None:
                done = self._waiters[op.id] = threading.Event()  # made on first wait: most never wait
        # In slices: an asynchronous exception (``_thread.interrupt_main``, which Ray's cancel
        # uses; ``PyThreadState_SetAsyncExc``) lands only when the thread runs Python again.
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done.wait(WAIT_SLICE if deadline is None else min(WAIT_SLICE, deadline - time.monotonic())):
            if deadline is not None and time.monotonic() >= deadline:
                break
        return op.state

    def health(self, now: float) -> dict[str, list[str]]:
        """Live work past its grace + 1 s since its cancel (``overdue``), and work with
        processes that survived SIGKILL (``unkillable``); ``now`` in monotonic seconds."""
        with self._lock:
            self._claim()
            live = list(self._live.values())
            # (A spawn recorded unmade left nothing running: never unkillable.)
            recent = [op for op in self._history if isinstance(op, Operation)]
        return {
            "overdue": [
                op.id
                for op in live
                if op.cancel_requested_at is not None and now - op.cancel_requested_at > op.grace + 1.0
            ],
            "unkillable": [op.id for op in live + recent if any(running(pid) for pid in op.unkillable)],
        }
