"""The kernel's Host: owner tags captured at start, output published to the right cell."""

from __future__ import annotations

import contextlib
import contextvars
import html
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from ..core import api
from ..core.errors import Cancelled
from ..core.operation import Operation
from ..core.progress import Progress, progress_line, progress_timing

#: The cell a piece of code belongs to. Set before each cell runs; asyncio tasks copy it,
#: and threads carry it on the Thread object (see ``install_thread_owner``).
_OWNER: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "jupyter_cancel_owner", default=None
)
_THREAD_ATTR = "_jupyter_cancel_owner"
#: Output of one operation published at most this often (the last bytes always arrive).
FLUSH_INTERVAL = 0.05
#: Unpublished output kept per operation; beyond it the middle is dropped with a marker.
PENDING_LIMIT = 256 * 1024
#: Operation ids remembered as shown (their display is not repeated as a cell's result).
SHOWN = 1000


def kernel_id_of(kernel: Any) -> str | None:
    try:
        from ipykernel.connect import get_connection_file

        name = os.path.basename(get_connection_file())
    except Exception:
        return None
    # jupyter_server names it kernel-<kernel_id>.json; elsewhere the stem is the best id there is.
    stem = name.removesuffix(".json")
    return stem[len("kernel-") :] if stem.startswith("kernel-") else stem or None


def set_owner(owner: dict[str, Any] | None) -> None:
    """The owner tags of the code running now (set before each cell)."""
    _OWNER.set(owner)


def tag_thread(thread: threading.Thread) -> None:
    """A thread belongs to the cell that started it, whatever cell runs later, and keeps the
    policy of the ``jc.policy`` block it was started in."""
    if getattr(thread, _THREAD_ATTR, None) is None:
        setattr(thread, _THREAD_ATTR, current_owner())
    chosen = api.policy_override()
    if chosen is not None and getattr(thread, api.THREAD_POLICY_ATTR, None) is None:
        setattr(thread, api.THREAD_POLICY_ATTR, chosen)


@contextlib.contextmanager
def owned_by(owner: dict[str, Any] | None) -> Iterator[None]:
    """Work started inside belongs to ``owner`` (a pool's workers to the cell that made the pool)."""
    token = _OWNER.set(owner)
    try:
        yield
    finally:
        _OWNER.reset(token)


def current_owner() -> dict[str, Any] | None:
    owner = _OWNER.get()
    if owner is None:
        owner = getattr(threading.current_thread(), _THREAD_ATTR, None)
    return owner


class _Publisher:
    """One thread sends operations' output as iopub ``stream`` messages, throttled."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self._cond = threading.Condition()
        self._pending: dict[str, list[Any]] = {}  # op id -> [parent, chunks, size, dropped]
        self._flushed: dict[str, threading.Event] = {}
        threading.Thread(target=self._run, name="jupyter_cancel-output", daemon=True).start()

    def add(self, op: Operation, parent: dict[str, Any], text: str) -> None:
        with self._cond:
            entry = self._pending.setdefault(op.id, [parent, [], 0, 0])
            entry[1].append(text)
            entry[2] += len(text)
            if entry[2] > PENDING_LIMIT:
                joined = "".join(entry[1])
                entry[3] += len(joined) - PENDING_LIMIT // 2
                entry[1] = [joined[-PENDING_LIMIT // 2 :]]
                entry[2] = PENDING_LIMIT // 2
            self._cond.notify()

    def flush(self, op: Operation, timeout: float = 2.0) -> None:
        """Block until what ``op`` printed so far has been sent."""
        with self._cond:
            if op.id not in self._pending:
                return
            done = self._flushed.setdefault(op.id, threading.Event())
            self._cond.notify()
        done.wait(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                batch, self._pending = self._pending, {}
                events, self._flushed = self._flushed, {}
            for parent, chunks, _, dropped in batch.values():
                text = "".join(chunks)
                if dropped:
                    text = f"[… {dropped} characters of output skipped …]\n" + text
                self._send(parent, text)
            for event in events.values():
                event.set()
            time.sleep(FLUSH_INTERVAL)  # rate limit: at most ~20 messages a second per operation

    def _send(self, parent: dict[str, Any], text: str) -> None:
        kernel = self.kernel
        try:
            kernel.session.send(
                kernel.iopub_socket,
                "stream",
                {"name": "stdout", "text": text},
                parent=parent,
                ident=b"stream.stdout",
            )
        except Exception:
            pass  # a closed socket at shutdown: the output has nowhere to go


class KernelHost(api.Host):
    """Owner tags from the executing cell; output to the cell that started the work."""

    def __init__(self, kernel: Any, kernel_id: str | None) -> None:
        self.kernel = kernel
        self.kernel_id = kernel_id
        self.publisher = _Publisher(kernel) if kernel is not None else None
        self.last_owner: dict[str, Any] = {"kernel_id": kernel_id}
        #: True once a frontend with the labextension announced itself (comm "jupyter_cancel"):
        #: then work shows as the rich widget, else as plain output that any frontend renders.
        self.rich = False
        self.feeders: dict[str, Any] = {}
        #: Operations whose widget or output this kernel showed (the most recent ``SHOWN``).
        self.shown: dict[str, None] = {}

    def _mark_shown(self, op: Operation) -> None:
        self.shown[op.id] = None
        while len(self.shown) > SHOWN:
            del self.shown[next(iter(self.shown))]

    def display_operation(self, op: Operation) -> None:
        """How IPython displays an Operation (``display(op)``, a cell's last line): nothing if
        its widget or output is already shown — ``jc.run(...)`` as a cell's last line adds no
        ``Out[n]: <Operation …>`` under it — else one line naming it."""
        if op.id in self.shown:
            return
        from IPython.display import display

        display({"text/plain": repr(op)}, raw=True)

    def owner(self) -> dict[str, Any]:
        return dict(current_owner() or self.last_owner)

    def parent_header(self) -> dict[str, Any]:
        owner = current_owner()
        if owner is not None and owner.get("parent") is not None:
            return owner["parent"]
        try:
            return self.kernel.get_parent("shell")
        except Exception:
            return {}

    def _widget(self, op: Operation) -> Any:
        """Display the operation widget for ``op``; None where it cannot be shown."""
        if not self.rich:
            return None
        try:
            from IPython.display import display

            from ..widgets import OperationWidget, WidgetFeeder
        except ImportError:
            return None
        feeder = WidgetFeeder(op, OperationWidget())
        self.feeders[op.id] = feeder
        display(feeder.widget)
        return feeder

    def changed(self, event: str, data: dict[str, Any]) -> None:
        """A registry event: the widget of that operation gets its new state."""
        feeder = self.feeders.get(data.get("id", ""))
        if feeder is not None:
            feeder.touch()
            if event == "ended":
                self.feeders.pop(data["id"], None)

    def show(self, op: Operation) -> None:
        self._mark_shown(op)
        if self.publisher is None:
            super().show(op)
            return
        if self._widget(op) is not None:
            return
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()  # what the cell printed before comes first
            except Exception:
                pass
        parent = self.parent_header()
        publisher = self.publisher
        op.on_output(lambda _op, text: publisher.add(_op, parent, text))

    def finished(self, op: Operation) -> None:
        feeder = self.feeders.get(op.id)
        if feeder is not None:
            feeder.flush()  # the final state, before the cell goes on
        if self.publisher is not None:
            self.publisher.flush(op)

    def interrupted(self, op: Operation) -> None:
        # In a notebook an interrupt of jc.run reads as one line, not a traceback.
        raise Cancelled(op, op.reason or "kernel_interrupt") from None

    def show_progress(self, bar: Progress) -> None:
        self._mark_shown(bar.operation)
        feeder = self._widget(bar.operation)
        if feeder is not None:
            bar.renderer = feeder  # render() → touch(): throttled like any operation
            feeder.render = feeder.touch
            return
        try:
            from IPython.display import display
        except ImportError:
            super().show_progress(bar)
            return
        bar.renderer = _HtmlBar(bar, display)


class _HtmlBar:
    """A plain HTML progress bar updated in place: works in every frontend. Its text form is
    tqdm's line (what a notebook run by nbconvert or papermill keeps as ``text/plain``)."""

    def __init__(self, bar: Progress, display: Any) -> None:
        self.bar = bar
        self.handle = display(self._shown(), display_id=True)

    def _shown(self) -> _Html:
        return _Html(self._html(), progress_line(self.bar))

    def _html(self) -> str:
        bar, op = self.bar, self.bar.operation
        value = f'value="{bar.n:g}" max="{bar.total:g}"' if bar.total else ""
        count = (f"{bar.n:g}/{bar.total:g}" if bar.total else f"{bar.n:g}") + f" [{progress_timing(bar)}]"
        state = op.state.value + (f" — {op.reason}" if op.reason else "")
        return (
            f"<div><b>{html.escape(bar.desc)}</b> <progress {value}></progress> {count} "
            f"<small>{html.escape(state)}</small></div>"
        )

    def render(self) -> None:
        if self.handle is not None:
            self.handle.update(self._shown())

    def clear(self) -> None:
        """``leave=False``: the completed bar goes."""
        if self.handle is not None:
            self.handle.update(_Html("", ""))


class _Html:
    def __init__(self, markup: str, text: str) -> None:
        self.markup = markup
        self.text = text

    def _repr_html_(self) -> str:
        return self.markup

    def __repr__(self) -> str:
        return self.text
