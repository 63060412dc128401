"""The worker side: a ``WorkerPlugin`` that makes each Dask task the owner of the work it starts.

Inside a task, ``jc.start`` / ``jc.run`` / ``jc.scope`` / ``jc.progress`` and every process the
task starts by any route (captured, as in a kernel) are operations of the worker process's
registry, tagged with the task's key and the notebook owner the task was annotated with. When
the scheduler takes a running task away (the worker state machine's ``executing`` /
``long-running`` → ``released``), its operations are cancelled — their whole trees, escapes
included — without blocking the worker's event loop; the reason is read from the stimulus
(``cancel-key-`` → ``user``, ``remove-client-`` → ``client_disconnected``,
``client-releases-keys-`` → ``released``). A worker closing ends what is left
(``worker_closing``); a worker killed outright is covered by the core's watchdog. Operation
events go to the clients through ``Worker.log_event`` on the topic ``jupyter-cancel``
(``{"batch": [message, ...]}``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from distributed import WorkerPlugin, get_worker
from distributed.worker import thread_state

from ..core import api
from ..core.capture import OWN_MACHINERY, OwnedCapture
from ..core.model import Reason
from ..core.operation import Operation
from ..core.progress import Progress
from . import adapter

log = logging.getLogger(__name__)

TOPIC = "jupyter-cancel"
#: The ``dask.annotate`` key the notebook side puts its owner under.
ANNOTATION = "jupyter_cancel"
PLUGIN_NAME = "jupyter-cancel"
RUNNING = frozenset({"executing", "long-running"})
#: Routine task events go to the clients in one message per this many seconds.
BATCH_INTERVAL = 0.05
#: Stimulus prefixes that mean "the client dropped this key", and the reason each becomes.
STIMULI = (
    ("cancel-key-", Reason.USER),
    ("remove-client-", Reason.CLIENT_DISCONNECTED),
    ("client-releases-keys-", Reason.RELEASED),
)
_OWNER_FIELDS = ("kernel_id", "cell_id", "client_session")


def reason_of(stimulus_id: str | None) -> str | None:
    """The cancel reason a scheduler stimulus stands for; None if it is not a client's drop."""
    for prefix, reason in STIMULI:
        if stimulus_id is not None and stimulus_id.startswith(prefix):
            return reason
    return None


def annotation(ts: Any) -> dict[str, Any]:
    """The notebook owner a task was submitted with (``{}`` if none, or malformed)."""
    found = (getattr(ts, "annotations", None) or {}).get(ANNOTATION)
    return found if isinstance(found, dict) else {}


class WorkerHost(api.Host):
    """Owner tags from the task running in this thread; no terminal echo (a worker's stdout
    is its log): output stays in each operation's tail."""

    def owner(self) -> dict[str, Any]:
        key = getattr(thread_state, "key", None)
        try:
            worker = get_worker()
        except ValueError:
            return {}
        tags: dict[str, Any] = {"worker": worker.address}
        if key is None:
            return {"tags": tags}
        found = annotation(adapter.task_state(worker, key))
        owner: dict[str, Any] = {k: found[k] for k in _OWNER_FIELDS if isinstance(found.get(k), str)}
        tags["dask_key"] = str(key)
        if isinstance(found.get("submission"), str):
            tags["submission"] = found["submission"]
        owner["tags"] = tags
        return owner

    def show(self, op: Operation) -> None:
        pass

    def show_progress(self, bar: Progress) -> None:
        bar.renderer = None  # a task's loop is stopped through it, drawn nowhere


class _Installed:
    """The process-wide part (one per worker process, shared by its workers): the host and
    the capture of every process a task starts."""

    lock = threading.Lock()
    users = 0
    capture: OwnedCapture | None = None

    @classmethod
    def acquire(cls) -> None:
        with cls.lock:
            cls.users += 1
            if cls.users > 1:
                return
            if type(api.host()) is not api.Host:
                return  # an in-process worker inside a kernel: the kernel's extension owns the work
            host = WorkerHost()
            api.set_host(host)
            cls.capture = OwnedCapture(
                api.registry(),
                host.owner,
                api.current_policy,
                machinery=(*OWN_MACHINERY, "distributed", "dask"),
            )
            cls.capture.install()

    @classmethod
    def release(cls) -> None:
        with cls.lock:
            cls.users -= 1
            if cls.users or cls.capture is None:
                return
            cls.capture.uninstall()
            cls.capture = None
            api.set_host(None)


class JupyterCancelPlugin(WorkerPlugin):  # type: ignore[misc]
    """Installed on every worker by ``jupyter_cancel.dask.install(client)`` (idempotent)."""

    name = PLUGIN_NAME
    idempotent = True

    def setup(self, worker: Any) -> None:
        self.worker = worker
        self.address = worker.address
        self.registry = api.registry()
        _Installed.acquire()
        self._pending: list[dict[str, Any]] = []
        self._flush_due = False
        self._unsubscribe = self.registry.subscribe(self._changed)
        # Started now, not waited for: registrations queue until it reads them (see the core).
        self.registry.start_watchdog()

    # -- the worker's state machine -----------------------------------------------------------
    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if start not in RUNNING and finish not in RUNNING and finish not in ("released", "forgotten"):
            return  # the hot path: most transitions of most tasks
        found = annotation(adapter.task_state(self.worker, key))
        stimulus = adapter.last_stimulus(self.worker)
        cancelled: list[str] = []
        why = None
        released = finish in ("released", "forgotten")
        if released:
            why = reason_of(stimulus)
            if start in RUNNING or why is not None:
                cancelled = self._cancel_key(str(key), why or Reason.RELEASED)
        if found.get("submission") and (start in RUNNING or finish in RUNNING or released):
            # A cancelling client waits for the release of each key it was told was on this
            # worker (whatever its state here): that one goes at once, the rest in batches.
            self._send(
                {
                    "event": "task",
                    "key": str(key),
                    "from": start,
                    "state": finish,
                    "submission": found["submission"],
                    "ops": cancelled,
                },
                urgent=bool(cancelled) or why in (Reason.USER, Reason.CLIENT_DISCONNECTED),
            )

    def _ops_of(self, key: str) -> list[Operation]:
        return [
            op
            for op in self.registry.operations()
            if op.tags.get("dask_key") == key and op.tags.get("worker") == self.address
        ]

    def _cancel_key(self, key: str, reason: str) -> list[str]:
        """End the work of a task the scheduler took away, whatever its policy: the cluster
        decided (a ``detach`` task is ``fire_and_forget``, so it is never released)."""
        ops = self._ops_of(key)
        if ops:
            self.registry.cancel_ops(ops, reason, wait=False, force=True)
        return [op.id for op in ops]

    # -- events to the clients ------------------------------------------------------------------
    def _changed(self, event: str, data: dict[str, Any]) -> None:
        """(The registry's event thread.) Tell the clients; end work a task started after the
        scheduler took the task away (its release found nothing yet)."""
        tags = data.get("tags") or {}
        if tags.get("worker") != self.address or event == "progress":
            return
        key = tags.get("dask_key")
        if event == "started" and key is not None and self._taken_away(key):
            try:
                self.registry.cancel_ops(
                    [self.registry.get(data["id"])], Reason.RELEASED, wait=False, force=True
                )
            except KeyError:
                pass
        if tags.get("submission"):
            self._send({"event": event, "op": data, "submission": tags["submission"]})

    def _taken_away(self, key: str) -> bool:
        """Whether the scheduler took ``key`` away (its work was started after its release)."""
        for ts in adapter.task_states(self.worker):
            if str(ts.key) == key:
                return ts.state in ("cancelled", "released")
        return True

    def _send(self, message: dict[str, Any], urgent: bool = True) -> None:
        """(Any thread.) Queue a message for the clients: what a cancel waits for goes at once
        (with what queued before it, in order); routine task events in one message per
        ``BATCH_INTERVAL``, so a thousand tiny tasks are not two thousand scheduler events."""
        message["worker"] = self.address
        try:
            self.worker.loop.add_callback(self._queue, message, urgent)
        except RuntimeError:
            pass  # the loop is closed: the worker is gone, and its clients know

    def _queue(self, message: dict[str, Any], urgent: bool) -> None:
        self._pending.append(message)
        if urgent:
            self._flush()
        elif not self._flush_due:
            self._flush_due = True
            self.worker.loop.call_later(BATCH_INTERVAL, self._flush)

    def _flush(self) -> None:
        self._flush_due = False  # a timer still due finds nothing to send: harmless
        batch, self._pending = self._pending, []
        if batch:
            self.worker.log_event(TOPIC, {"batch": batch})

    # -- closing ------------------------------------------------------------------------------
    async def teardown(self, worker: Any) -> None:
        ops = [op for op in self.registry.operations() if op.tags.get("worker") == self.address]
        if ops:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(
                None, lambda: self.registry.cancel_ops(ops, Reason.WORKER_CLOSING, wait=True, force=True)
            )
        self._unsubscribe()
        self._flush()
        _Installed.release()
