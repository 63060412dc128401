"""The registry's events, told to its subscribers: queued under the registry's lock (so every
operation's sequence is ``started`` → (``cancel_requested``) → ``ended``, whatever thread
reports what first) and delivered by one dispatcher thread (a subscriber never blocks a
cancel), in batches to batch subscribers."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from .errors import Cancelled
from .operation import Operation

log = logging.getLogger(__name__)

Subscriber = Callable[[str, dict[str, Any]], None]
BatchSubscriber = Callable[[list[tuple[str, dict[str, Any]]]], None]
#: Most events one batch subscriber call carries (what queued up while the last call ran).
BATCH_MAX = 500


class EventBus:
    """Subscribers, the queue, and the thread that empties it (started with the first one)."""

    def __init__(self, lock: threading.RLock) -> None:
        #: The registry's lock: events are queued in the order it orders the changes.
        self._lock = lock
        #: Ids of quiet operations (captured, mostly short-lived): announced only by ``announce``,
        #: and an end never told if nothing announced them first and no cancel chose them.
        self.hushed: set[str] = set()
        self._subscribers: list[Subscriber] = []
        self._batch_subscribers: list[BatchSubscriber] = []
        #: Whether anyone listens (checked before building an event: most owners have none).
        self.active = False
        #: Operations whose ``started`` went out (the lock guards it).
        self._announced: set[str] = set()
        self._events: queue.SimpleQueue[tuple[str, dict[str, Any]] | None] | None = None

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        return self._add(self._subscribers, subscriber)

    def subscribe_batch(self, subscriber: BatchSubscriber) -> Callable[[], None]:
        return self._add(self._batch_subscribers, subscriber)

    def _add(self, where: list[Any], subscriber: Any) -> Callable[[], None]:
        with self._lock:
            if self._events is None:
                self._events = queue.SimpleQueue()
                threading.Thread(target=self._dispatch, name="jupyter_cancel-events", daemon=True).start()
            where.append(subscriber)
            self.active = True

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in where:
                    where.remove(subscriber)
                self.active = bool(self._subscribers or self._batch_subscribers)

        return unsubscribe

    def hush(self, op: Operation) -> None:
        """Keep ``op`` quiet until ``announce`` (or a cancel) tells of it."""
        with self._lock:
            self.hushed.add(op.id)

    def announce(self, op: Operation) -> None:
        """Tell of ``op`` now, if it still runs."""
        if not op.done and self.active:
            self.emit("started", op)

    def ended(self, op: Operation) -> None:
        """``op`` ended (called under the lock): told unless it stayed quiet; then forgotten."""
        if self.active:
            self.emit("ended", op)
        self.hushed.discard(op.id)

    def _hushed_still(self, op: Operation) -> bool:
        return op.id in self.hushed and not op.cancel_requested

    def emit(self, event: str, op: Operation) -> None:
        """Queue one event (call it only while ``active``)."""
        assert self._events is not None
        with self._lock:
            if event == "started":
                if op.id in self._announced:
                    return
            elif event == "ended" and op.id not in self._announced and self._hushed_still(op):
                return  # captured, short-lived, never announced: never seen
            elif op.id not in self._announced:
                self._events.put(("started", op.to_json(pids=False)))  # ended before it was announced
            if event == "ended":
                self._announced.discard(op.id)
            else:
                self._announced.add(op.id)
            self._events.put((event, op.to_json(pids=False)))  # cheap: never scan /proc on a cancel path

    def _dispatch(self) -> None:
        assert self._events is not None
        while True:
            batch = self._next_batch(self._events)
            if batch is None:
                return
            for subscriber in list(self._subscribers):
                for one in batch:
                    try:
                        subscriber(*one)
                    except (Exception, Cancelled):
                        log.exception("subscriber %r failed", subscriber)
            for batch_subscriber in list(self._batch_subscribers):
                try:
                    batch_subscriber(batch)
                except (Exception, Cancelled):
                    log.exception("subscriber %r failed", batch_subscriber)

    @staticmethod
    def _next_batch(events: queue.SimpleQueue[Any]) -> list[tuple[str, dict[str, Any]]] | None:
        """What queued up, waiting for the first (None: the bus is closing)."""
        item = events.get()
        if item is None:
            return None
        batch = [item]
        while len(batch) < BATCH_MAX:
            try:
                more = events.get_nowait()
            except queue.Empty:
                break
            if more is None:
                return None
            batch.append(more)
        return batch
