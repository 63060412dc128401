"""The Operation: one unit of cancellable work, with its owner tags, state and reason."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .errors import Cancelled
from .model import CANCELLED_EXIT_CODE, CancelReason, Policy, Reason, State

if TYPE_CHECKING:
    from .resources import Usage

#: Bytes of output an operation keeps (the tail); older output is dropped.
OUTPUT_TAIL = 64 * 1024
_PREFIX = os.urandom(4).hex()
_counter = itertools.count(1)

OutputListener = Callable[["Operation", str], None]


class Owner(Protocol):
    """What an operation asks of the registry that owns its life (a ``Registry``): typed here,
    so that this module never imports the registry — no import circle, not even for types."""

    def wait(self, op: Operation, timeout: float | None = None) -> State: ...

    def cancel(
        self,
        op_id: str,
        reason: str | CancelReason = Reason.USER,
        *,
        wait: bool = True,
        remember: bool = False,
    ) -> list[Operation]: ...

    def changed(self, op: Operation, event: str) -> None: ...

    def finish(self, op: Operation, state: State) -> None: ...


class Runner(Protocol):
    """What runs an operation's work, as the registry sees it. The registry alone changes an
    operation's state; a runner reports an end with ``op.registry.finish(op, state)``.

    Process trees (``ProcessRunner``) are terminated by the registry itself, all cancelled
    trees in one pass; every other runner stops its work through ``request_cancel``.
    """

    def pids(self) -> list[int]:
        """Live pids of the work (empty for in-process work)."""

    def identity(self) -> dict[str, Any]:
        """What lets another process end the work safely if this one cannot (a process tree's
        root as [pid, create_time] and its cgroup); empty for in-process work."""

    def request_cancel(self, op: Operation) -> None:
        """Ask the work to stop; return without waiting for it."""

    def wait_gone(self, op: Operation, timeout: float) -> bool:
        """Block until the work stopped (or ``timeout``); True if it did."""


def new_id(*, detached: bool = False) -> str:
    """A new operation id, unique across processes (random prefix + counter). Every id of this
    process but a ``detach`` operation's starts with ``death_prefix()``."""
    return f"{_PREFIX}{'d' if detached else ''}-{next(_counter)}"


def death_prefix() -> str:
    """What the cookies of this process's work start with, ``detach`` work's excepted: what
    the death watchdog ends when this process dies, registered or not yet."""
    return f"{_PREFIX}-"


class Tail:
    """A bounded text tail: appending is O(chunk), memory stays below ``limit`` bytes."""

    __slots__ = ("_chunks", "_size", "limit")

    def __init__(self, limit: int = OUTPUT_TAIL) -> None:
        self._chunks: list[str] = []
        self._size = 0
        self.limit = limit

    def append(self, text: str) -> None:
        if len(text) >= self.limit:
            self._chunks = [text[-self.limit :]]
            self._size = self.limit
            return
        self._chunks.append(text)
        self._size += len(text)
        if self._size > 2 * self.limit:
            joined = "".join(self._chunks)[-self.limit :]
            self._chunks = [joined]
            self._size = len(joined)

    def text(self) -> str:
        return "".join(self._chunks)[-self.limit :]


class Operation:
    """One unit of cancellable work.

    Invariants: ``state`` only moves forward (``pending → running → completed | failed |
    cancelled``); once done it never changes. ``cancel()`` is idempotent. A cancelled
    operation keeps its ``reason`` and reports ``exit_code`` 130 (``returncode`` is what
    the process really returned, e.g. -15).
    """

    __slots__ = (
        "_listeners",
        "_registry",
        "_tail",
        "_usage",
        "cancel_latency",
        "cancel_requested_at",
        "cell_id",
        "client_session",
        "ended",
        "error",
        "grace",
        "id",
        "kernel_id",
        "key",
        "kind",
        "message",
        "name",
        "policy",
        "progress",
        "reason",
        "resources",
        "returncode",
        "runner",
        "started",
        "state",
        "tags",
        "timeout",
        "unkillable",
    )

    def __init__(
        self,
        registry: Owner,
        *,
        name: str,
        kind: str,
        policy: Policy,
        grace: float,
        timeout: float | None = None,
        key: str | None = None,
        owner: Mapping[str, Any] | None = None,
        op_id: str | None = None,
    ) -> None:
        owner = owner or {}
        self.id = op_id or new_id()
        self.name = name
        self.kind = kind
        self.policy = policy
        self.grace = grace
        self.timeout = timeout
        self.key = key
        self.kernel_id: str | None = owner.get("kernel_id")
        self.client_session: str | None = owner.get("client_session")
        self.cell_id: str | None = owner.get("cell_id")
        self.tags: dict[str, Any] = dict(owner.get("tags") or {})
        self.state = State.PENDING
        self.reason: str | None = None
        self.returncode: int | None = None
        self.started = time.time()
        self.ended: float | None = None
        self.cancel_requested_at: float | None = None
        #: Seconds from the cancel request to the end (the whole tree gone), once cancelled.
        self.cancel_latency: float | None = None
        self.progress: dict[str, Any] | None = None
        self.unkillable: list[int] = []
        #: What its tree costs (``core.resources``), while someone looked: None if never sampled.
        self.resources: dict[str, Any] | None = None
        self.error: str | None = None
        self.message: str | None = None
        self._registry = registry
        #: What runs the work (set once, by ``Registry.attach``); None while pending.
        self.runner: Runner | None = None
        self._tail: Tail | None = None
        self._usage: Usage | None = None
        self._listeners: list[OutputListener] = []

    # -- what callers read ---------------------------------------------------------
    @property
    def exit_code(self) -> int | None:
        """130 when cancelled, else the process's return code (None while running)."""
        if self.state is State.CANCELLED:
            return CANCELLED_EXIT_CODE
        return self.returncode

    @property
    def done(self) -> bool:
        return self.state.done

    @property
    def cancelled(self) -> bool:
        return self.state is State.CANCELLED

    @property
    def cancel_requested(self) -> bool:
        return self.cancel_requested_at is not None

    @property
    def output(self) -> str:
        """The last 64 KiB of the output (stdout and stderr merged)."""
        return self._tail.text() if self._tail is not None else ""

    def pids(self) -> list[int]:
        """Pids of the live processes of this operation (empty for in-process work)."""
        return self.runner.pids() if self.runner is not None else []

    def sample_resources(self) -> dict[str, Any] | None:
        """Sample what its tree costs now into ``resources`` and return it (process work
        only; an ended tree keeps its peak and CPU seconds, its live figures go to 0). Called
        only while someone looks: a widget on screen, the running-work panel open."""
        if self.kind != "process":
            return self.resources
        if self.done:
            if self.resources is not None and self.resources.get("processes"):
                self.resources = {**self.resources, "cpu_percent": 0.0, "rss": 0, "processes": 0}
            return self.resources
        if self._usage is None:
            from .resources import Usage

            self._usage = Usage()
        self.resources = self._usage.sample(self.pids())
        return self.resources

    # -- what callers do -----------------------------------------------------------
    def wait(self, timeout: float | None = None) -> State:
        """Block until the operation is done (or ``timeout``); return its state."""
        return self._registry.wait(self, timeout)

    def result(self, timeout: float | None = None) -> Operation:
        """Wait; raise ``Cancelled`` if it was cancelled, else return self."""
        self.wait(timeout)
        if self.state is State.CANCELLED:
            raise Cancelled(self, self.reason or "cancelled")
        return self

    def cancel(self, reason: str = "user", *, wait: bool = True) -> bool:
        """Cancel this operation; True if this call requested it (False if already done)."""
        return bool(self._registry.cancel(self.id, reason=reason, wait=wait))

    def on_output(self, listener: OutputListener) -> None:
        """Call ``listener(op, text)`` for each chunk of output from now on."""
        self._listeners.append(listener)

    def set_progress(self, n: float, total: float | None = None, **extra: Any) -> None:
        """Record progress (``n`` of ``total``) and tell subscribers."""
        self.progress = {"n": n, "total": total, **extra}
        self._registry.changed(self, "progress")

    @property
    def registry(self) -> Owner:
        """The registry that owns this operation's life."""
        return self._registry

    # -- what runners do -------------------------------------------------------------
    def feed(self, text: str) -> None:
        """Runners hand over output here: kept in the tail, passed to listeners."""
        if self.cancel_requested:
            return  # stop accepting output once a cancel was asked for
        if self._tail is None:
            self._tail = Tail()
        self._tail.append(text)
        for listener in list(self._listeners):
            try:
                listener(self, text)
            except (Exception, Cancelled):  # a broken display must not break the work
                self._listeners.remove(listener)

    def to_json(self, *, pids: bool = True) -> dict[str, Any]:
        """The Operation JSON that the server and the labextension read (``pids`` scans for live members).

        Process operations also carry ``root`` ([pid, create_time]) and ``cgroup``, so a
        server can terminate the tree itself, identity checked, if the kernel cannot.
        """
        data = {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "kernel_id": self.kernel_id,
            "client_session": self.client_session,
            "cell_id": self.cell_id,
            "policy": self.policy.value,
            "state": self.state.value,
            "reason": self.reason,
            "pids": self.pids() if pids and not self.done else [],
            "started": self.started,
            "ended": self.ended,
            "exit_code": self.exit_code,
            "progress": self.progress,
            "tags": self.tags,
            "grace": self.grace,
            "unkillable": list(self.unkillable),
        }
        if self.message is not None:
            data["message"] = self.message
        if self.resources is not None:
            data["resources"] = dict(self.resources)
        if self.ended is not None:
            data["duration"] = self.ended - self.started
            if self.cancel_latency is not None:
                data["cancel_latency"] = self.cancel_latency
        if self.runner is not None:
            data.update(self.runner.identity())
        return data

    def __repr__(self) -> str:
        extra = f" reason={self.reason!r}" if self.reason else ""
        return f"<Operation {self.id} {self.name!r} {self.state.value}{extra}>"
