"""The distributed internals the Dask integration relies on, in one place.

Checked against distributed 2026.8 (and the 2024.x–2026.x lines' same attributes): a
``Client``'s ``_cancel(futures, reason, msg, force)`` (what ``Future.cancel`` and
``Client.cancel`` call) and its ``_stream_handlers["cancelled-keys"]`` (the scheduler's report
that keys were cancelled); a ``Worker``'s ``state.tasks`` (key → ``TaskState``, with
``state`` and ``annotations``) and ``state.stimulus_log`` (the latest stimulus names why a
task was released). When one of these changes, this module is what changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from distributed import Client, futures_of


def watch_cancels(client: Client, sent: Callable[[Any], None], confirmed: Callable[[Any], None]) -> None:
    """Call ``sent(key)`` for each future ``client`` is asked to cancel (before it is sent),
    and ``confirmed(key)`` for each key the scheduler then reports cancelled."""
    original_cancel = client._cancel
    original_report = client._stream_handlers["cancelled-keys"]

    async def _cancel(futures: Any, reason: Any = None, msg: Any = None, force: bool = False) -> Any:
        for future in futures_of(futures):
            sent(future.key)
        return await original_cancel(futures, reason=reason, msg=msg, force=force)

    def cancelled_keys(keys: Any, reason: Any = None, msg: Any = None) -> None:
        original_report(keys, reason=reason, msg=msg)
        for key in keys:
            confirmed(key)

    client._cancel = _cancel
    client._stream_handlers["cancelled-keys"] = cancelled_keys


async def force_cancel(client: Client, futures: list[Any]) -> None:
    """Cancel ``futures`` on the cluster even if they run (``force``)."""
    await client._cancel(futures, None, None, True)


def task_state(worker: Any, key: Any) -> Any:
    """The worker's ``TaskState`` of ``key`` (None if it has none)."""
    return worker.state.tasks.get(key)


def task_states(worker: Any) -> list[Any]:
    return list(worker.state.tasks.values())


def last_stimulus(worker: Any) -> str | None:
    """The id of the latest stimulus the worker's state machine handled."""
    stimuli = worker.state.stimulus_log
    return getattr(stimuli[-1], "stimulus_id", None) if stimuli else None
