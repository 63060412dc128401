"""Per-item LLM work (embeddings, tagging, descriptions) with a stop that keeps what is done."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..core import api
from ..core.errors import Cancelled
from ..core.progress import progress

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class BatchResult(Generic[R]):
    """What a batch computed: ``results`` in input order up to where it stopped."""

    results: list[R] = field(default_factory=list)
    cancelled: bool = False
    reason: str | None = None
    total: int | None = None

    def __len__(self) -> int:
        return len(self.results)


def batch(
    fn: Callable[..., R],
    items: Iterable[T],
    *,
    desc: str = "batch",
    total: int | None = None,
) -> BatchResult[R]:
    """Apply ``fn`` to each item under one operation with a progress bar and a stop.

    A stop takes effect between items, and within one if ``fn`` accepts a ``scope``
    argument (check ``scope.cancelled`` or register ``scope.on_cancel`` to close a
    connection), or if the item runs ``jc.run``/``stream_chat`` (those stop too).
    Never raises ``Cancelled``: the results computed before the stop are returned.
    """
    takes_scope = "scope" in inspect.signature(fn).parameters
    bar = progress(items, total=total, desc=desc)
    result: BatchResult[R] = BatchResult(total=int(bar.total) if bar.total else None)
    scope = bar.scope
    before: set[str] = set()

    def stop_children() -> None:
        # Work the current item started (processes, streams) stops with the batch.
        for op in api.operations():
            if op.id not in before and op is not scope.operation:
                op.cancel(scope.reason or "user", wait=False)

    scope.on_cancel(stop_children)
    try:
        for item in bar:
            before = {op.id for op in api.operations()}
            value = fn(item, scope=scope) if takes_scope else fn(item)
            if scope.cancelled:
                break  # a result finished after the stop is not kept half-trusted
            result.results.append(value)
        bar.scope.raise_if_cancelled()
    except Cancelled as err:
        result.cancelled = True
        result.reason = err.reason
    return result
