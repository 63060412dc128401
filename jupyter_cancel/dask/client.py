"""The notebook side: each submission to a Dask cluster is one operation of the kernel.

``submit``, ``compute`` and ``with tracked(client):`` annotate what they send with the
notebook owner (kernel, cell, client session, policy) and a submission id, and register one
operation (kind ``dask``) in this process's registry. Every trigger the kernel knows — re-run,
deleted cell, interrupt, restart, shutdown, closed tab, Stop — cancels it like local work; its
cancel is ``client.cancel(futures, force=True)``, and it ends once the workers reported the
task's work gone (the worker plugin's events), so the cancel latency covers the cluster too.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import dask
from distributed import Client, Future, fire_and_forget, futures_of

from ..core import api
from ..core.model import Policy, Reason, State
from ..core.operation import Operation
from . import adapter
from .worker import ANNOTATION, PLUGIN_NAME, RUNNING, TOPIC, JupyterCancelPlugin

log = logging.getLogger(__name__)

#: Seconds past an operation's grace after which a cancel counts as done even if no worker
#: reported (a worker that died meanwhile: its watchdog ended the trees).
REPORT_TIMEOUT = 5.0
#: Seconds between two progress updates of a submission of many futures.
PROGRESS_EVERY = 0.1
#: Remote operations remembered per client (the most recent), for ``remote_operations``.
REMOTE_HISTORY = 1000


class ClusterLink:
    """One per client: the plugin on its workers, their events, its live submissions."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._lock = threading.Lock()
        self._runners: dict[str, DaskRunner] = {}
        #: Latest JSON of each remote operation (id → JSON, with ``worker``), most recent last.
        self.remote: dict[str, dict[str, Any]] = {}
        #: The operation each submitted key belongs to (the most recent ``REMOTE_HISTORY``).
        self.by_key: dict[Any, Operation] = {}
        #: Keys whose cancel was sent and not yet confirmed by the scheduler (see ``settled``).
        self._inflight: dict[Any, threading.Event] = {}
        self._workers: set[str] = set()
        self._watch_cancels()

    def _watch_cancels(self) -> None:
        """Know when the scheduler confirmed a cancel: its ``cancelled-keys`` report cancels
        whatever future the client holds for the key *then*, so a key re-submitted before the
        report arrived would be cancelled too (a Dask race). Wraps this client's ``_cancel``
        (what ``future.cancel()`` and ``client.cancel`` call) and its report handler."""
        inflight = self._inflight

        def confirmed(key: Any) -> None:
            done = inflight.pop(key, None)
            if done is not None:
                done.set()

        adapter.watch_cancels(self.client, lambda key: inflight.setdefault(key, threading.Event()), confirmed)

    def settled(self, key: Any, timeout: float = 2.0) -> None:
        """Wait until a cancel of ``key`` sent earlier was confirmed (bounded)."""
        confirmed = self._inflight.get(key)
        if confirmed is not None and not confirmed.wait(timeout):
            self._inflight.pop(key, None)

    def on_event(self, event: Any) -> None:
        """(The client's event loop.) A worker plugin's batch of messages."""
        try:
            _, batch = event
            messages = batch["batch"]
        except (TypeError, ValueError, KeyError):
            return
        for msg in messages if isinstance(messages, (list, tuple)) else ():  # msgpack: a tuple
            if isinstance(msg, dict):
                self._on_message(msg)

    def _on_message(self, msg: dict[str, Any]) -> None:
        submission = msg.get("submission")
        worker = msg.get("worker")
        if isinstance(worker, str) and worker not in self._workers:
            # The scheduler's events about that worker (its removal among them): not the
            # "all" topic, which also carries every client's coming and going.
            self._workers.add(worker)
            self.client.subscribe_topic(worker, functools.partial(self.on_cluster_event, topic=worker))
        if msg.get("event") != "task" and isinstance(msg.get("op"), dict):
            with self._lock:
                self.remote.pop(msg["op"].get("id"), None)
                self.remote[msg["op"].get("id")] = {**msg["op"], "worker": msg.get("worker")}
                while len(self.remote) > REMOTE_HISTORY:
                    del self.remote[next(iter(self.remote))]
        runner = self._runners.get(submission) if isinstance(submission, str) else None
        if runner is not None:
            runner.on_remote(msg)

    def on_cluster_event(self, event: Any, topic: str | None = None) -> None:
        """(The client's event loop.) The scheduler's events about a worker: one that left took its
        processes with it (its plugin's teardown or, if it was killed, its watchdog ended them),
        so no report about them will come."""
        try:
            _, msg = event
            gone = topic if msg.get("action") == "remove-worker" else None
        except (TypeError, ValueError, AttributeError):
            return
        if isinstance(gone, str):
            with self._lock:
                runners = list(self._runners.values())
            for runner in runners:
                runner.on_worker_gone(gone)

    def add(self, runner: DaskRunner) -> None:
        with self._lock:
            self._runners[runner.op.id] = runner

    def drop(self, runner: DaskRunner) -> None:
        with self._lock:
            self._runners.pop(runner.op.id, None)

    def cancel(self, futures: Sequence[Future], runner: DaskRunner | None = None) -> None:
        """``client.cancel(futures, force=True)`` without blocking the caller (a trigger may
        arrive on any thread, the client's own loop included). With ``runner``: first ask the
        scheduler which of the keys are on which worker, so the runner waits for each of those
        workers' release report (a task that began a moment ago has not said so yet)."""
        if not futures:
            return
        client = self.client

        async def cancel() -> None:
            if runner is not None:
                try:
                    runner.expect_releases(await client.scheduler.processing(workers=None))
                except Exception:  # an old scheduler, a lost connection: the events still count
                    log.debug("asking the scheduler where the keys run failed", exc_info=True)
            # Not those done already: cancelled by Dask's own API, their key may be in use again.
            left = [f for f in futures if not f.done()]
            if left:
                await adapter.force_cancel(client, left)

        try:
            client.loop.add_callback(cancel)
        except RuntimeError:
            pass  # the client's loop is closed: its scheduler dropped the keys already


_links: weakref.WeakKeyDictionary[Client, ClusterLink] = weakref.WeakKeyDictionary()
_install_lock = threading.Lock()


def install(client: Client) -> ClusterLink:
    """Install the worker plugin on ``client``'s cluster (idempotent: workers that join later
    get it too) and subscribe to its events. The submission helpers call it for you."""
    if client.asynchronous:
        raise TypeError("jupyter_cancel.dask needs a synchronous Client (Client(..., asynchronous=False))")
    with _install_lock:
        link = _links.get(client)
        if link is not None:
            return link
        link = ClusterLink(client)
        client.register_plugin(JupyterCancelPlugin(), name=PLUGIN_NAME)
        client.subscribe_topic(TOPIC, link.on_event)
        _links[client] = link
        return link


def remote_operations(client: Client) -> list[dict[str, Any]]:
    """The operations the client's workers reported (latest JSON each, with ``worker``)."""
    link = _links.get(client)
    if link is None:
        return []
    with link._lock:
        return list(link.remote.values())


class DaskRunner:
    """A submission's futures as an operation's work (see the module's docstring)."""

    def __init__(self, link: ClusterLink, op: Operation) -> None:
        self.link = link
        self.op = op
        self.futures: list[Future] = []
        self._lock = threading.Lock()
        self._running: dict[str, str] = {}  # key → worker, of the tasks executing now
        self._live: set[str] = set()  # remote operations started and not ended
        self._awaited: set[str] = set()  # remote operations a worker is ending for us
        self._where: dict[str, str] = {}  # remote operation → its worker
        self._ended: set[str] = set()
        self._workers: set[str] = set()
        self._timer: threading.Timer | None = None
        self._done = 0  # futures done so far
        self._told = 0.0  # when progress was last told

    # -- the runner protocol ---------------------------------------------------------------------
    def pids(self) -> list[int]:
        return []  # the work runs on other machines: never pids this host could signal

    def identity(self) -> dict[str, Any]:
        return {}

    def request_cancel(self, op: Operation) -> None:
        self.link.cancel(self.futures, self)
        self._timer = threading.Timer(op.grace + REPORT_TIMEOUT, self._give_up)
        self._timer.daemon = True
        self._timer.start()
        self._settle()

    def wait_gone(self, op: Operation, timeout: float) -> bool:
        return op.wait(timeout).done

    # -- what the submission helpers call --------------------------------------------------------
    def add(self, futures: Sequence[Future]) -> None:
        self.futures.extend(futures)
        self._progress()
        for future in futures:
            future.add_done_callback(self._future_done)
        if self.op.cancel_requested:
            self.link.cancel(futures)

    # -- what happens ------------------------------------------------------------------------------
    def _future_done(self, _future: Future) -> None:
        """(Dask's callback thread.) One of the futures finished, failed or was cancelled."""
        op = self.op
        with self._lock:
            self._done += 1  # one call per future: counted, not rescanned (1000 tasks: 1000 calls)
            last = self._done >= len(self.futures)
        if not last:
            self._progress()
            return
        done = list(self.futures)
        self._progress(force=True)
        if op.done:
            return
        if op.cancel_requested:
            self._settle()
        elif any(f.status in ("cancelled", "lost") for f in done):
            # Cancelled by Dask's own API (future.cancel(), client.restart()): the same end.
            op.registry.cancel_ops([op], Reason.USER, wait=False, force=True)
        else:
            failed = [f for f in done if f.status == "error"]
            if failed:
                op.error = repr(failed[0].exception())
            self._finish(State.FAILED if failed else State.COMPLETED)

    def on_remote(self, msg: dict[str, Any]) -> None:
        """(The client's event loop.) A worker reported a task or an operation of ours."""
        worker = msg.get("worker")
        with self._lock:
            if isinstance(worker, str):
                self._workers.add(worker)
            if msg.get("event") == "task":
                key = str(msg.get("key"))
                if msg.get("state") in RUNNING:
                    self._running[key] = str(worker)
                else:
                    self._running.pop(key, None)
                ops = [str(i) for i in msg.get("ops") or () if i not in self._ended]
                self._awaited.update(ops)
                self._where.update(dict.fromkeys(ops, str(worker)))
            elif isinstance(msg.get("op"), dict):
                op_id = str(msg["op"].get("id"))
                if msg.get("event") == "ended":
                    self._ended.add(op_id)
                    self._live.discard(op_id)
                    self._awaited.discard(op_id)
                elif op_id not in self._ended:
                    self._live.add(op_id)
                    self._where[op_id] = str(worker)
            workers = sorted(self._workers)
            changed = workers != self.op.tags.get("workers")
            self.op.tags["workers"] = workers
            self.op.tags["remote_operations"] = len(self._live)
        if changed and not self.op.done:
            self.op.registry.changed(self.op, "progress")  # the panel shows where it runs
        if self.op.cancel_requested:
            self._settle()

    def expect_releases(self, processing: Any) -> None:
        """(The client's loop, before the cancel is sent.) The scheduler's ``{worker: [keys]}``:
        each of our keys there is running (or about to) until that worker reports its release."""
        ours = {str(f.key) for f in self.futures}
        with self._lock:
            for worker, keys in (processing or {}).items():
                for key in keys:
                    if str(key) in ours:
                        self._running[str(key)] = str(worker)

    def on_worker_gone(self, worker: str) -> None:
        with self._lock:
            for key in [k for k, w in self._running.items() if w == worker]:
                del self._running[key]
            for op_id in [i for i, w in self._where.items() if w == worker]:
                self._live.discard(op_id)
                self._awaited.discard(op_id)
                del self._where[op_id]
        if self.op.cancel_requested:
            self._settle()

    def _settle(self) -> None:
        """End a cancelled submission once nothing of it runs on a worker any more."""
        with self._lock:
            busy = self._running or self._live or self._awaited
        if not busy and all(f.done() for f in self.futures):
            self._finish(State.CANCELLED)

    def _give_up(self) -> None:
        if not self.op.done:
            with self._lock:
                left = sorted(self._live | self._awaited)
            log.warning(
                "dask submission %s: no report from its workers about %s; taken as ended", self.op.id, left
            )
            self._finish(State.CANCELLED)

    def _finish(self, state: State) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.op.registry.finish(self.op, state)
        self.link.drop(self)
        self.futures = []  # the cluster may release the results the user no longer holds

    def _progress(self, force: bool = False) -> None:
        """``n`` of ``total`` futures done, told at most ``PROGRESS_EVERY`` seconds apart."""
        now = time.monotonic()
        if len(self.futures) > 1 and (force or now - self._told >= PROGRESS_EVERY):
            self._told = now
            self.op.set_progress(self._done, len(self.futures))


def _begin(client: Client, name: str, policy: str | Policy | None) -> tuple[DaskRunner, dict[str, Any]]:
    link = install(client)
    chosen = api.current_policy() if policy is None else policy
    owner = api.host().owner()

    def runner_of(op: Operation) -> DaskRunner:
        made = DaskRunner(link, op)
        link.add(made)
        return made

    op = api.registry().launch(runner_of, name=name, kind="dask", policy=chosen, owner=owner)
    runner = op.runner
    assert isinstance(runner, DaskRunner)
    note = {k: owner[k] for k in ("kernel_id", "cell_id", "client_session") if owner.get(k)}
    note.update(submission=op.id, policy=op.policy.value)
    return runner, note


def _attach(runner: DaskRunner, found: Any) -> None:
    futures = futures_of(found)
    link = runner.link
    with link._lock:
        for future in futures:
            link.by_key.pop(future.key, None)
            link.by_key[future.key] = runner.op
        while len(link.by_key) > REMOTE_HISTORY:
            del link.by_key[next(iter(link.by_key))]
    if runner.op.policy is Policy.DETACH:
        fire_and_forget(futures)  # the scheduler keeps it if this client dies
    runner.add(futures)
    if not futures:
        runner._finish(State.COMPLETED)


@contextlib.contextmanager
def _submitting(client: Client, name: str, policy: str | Policy | None) -> Iterator[tuple[DaskRunner, Any]]:
    runner, note = _begin(client, name, policy)
    try:
        with dask.annotate(**{ANNOTATION: note}):
            yield runner, note
    except BaseException as exc:
        runner.op.error = repr(exc)
        runner._finish(State.FAILED)
        raise


def submit(client: Client, fn: Any, *args: Any, policy: str | Policy | None = None, **kwargs: Any) -> Future:
    """``client.submit(fn, *args, **kwargs)`` as an operation of the current cell."""
    name = f"{getattr(fn, '__name__', 'task')} on dask"
    if "key" in kwargs:
        install(client).settled(kwargs["key"])  # a cancel of that key still on its way back
    with _submitting(client, name, policy) as (runner, _):
        future = client.submit(fn, *args, **kwargs)
    _attach(runner, future)
    return future


def compute(client: Client, collection: Any, *, policy: str | Policy | None = None, **kwargs: Any) -> Any:
    """``client.compute(collection, **kwargs)`` as an operation of the current cell."""
    name = f"{type(collection).__name__} on dask"
    with _submitting(client, name, policy) as (runner, _):
        found = client.compute(collection, **kwargs)
    _attach(runner, found)
    return found


@contextlib.contextmanager
def tracked(
    client: Client, name: str = "dask work", *, policy: str | Policy | None = None
) -> Iterator[Operation]:
    """Everything submitted to ``client`` inside the block is one operation of the current cell:
    ``with jc.dask.tracked(client): futures = client.map(f, items)``."""
    before = set(client.futures)
    with _submitting(client, name, policy) as (runner, _):
        yield runner.op
    new = [Future(key, client) for key in list(client.futures) if key not in before]
    _attach(runner, new)


def operation_of(future: Future) -> Operation | None:
    """The kernel-side operation a future was submitted under (None if it was not)."""
    link = _links.get(future.client)
    if link is None:
        return None
    with link._lock:
        return link.by_key.get(future.key)
