"""The operation widget's model (its view lives in the labextension) and its feeder.

The stop button never goes through an ipywidgets comm message (that would wait for the
busy shell): the view sends ``jupyter_cancel_request`` on the kernel's control channel.
State flows the other way, throttled to ~10 updates a second; the final state always
arrives.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from ipywidgets import DOMWidget
from traitlets import Bool, Float, Int, Unicode

from ..core.operation import Operation
from ..core.resources import describe

MODULE = "jupyter-cancel"
VERSION = "^0.1.0"
TAIL_LINES = 200
INTERVAL = 0.1
#: A shown, running process tree is sampled (CPU, RSS, processes) this often, in seconds.
SAMPLE_EVERY = 1.0


class OperationWidget(DOMWidget):
    _model_name = Unicode("OperationModel").tag(sync=True)
    _model_module = Unicode(MODULE).tag(sync=True)
    _model_module_version = Unicode(VERSION).tag(sync=True)
    _view_name = Unicode("OperationView").tag(sync=True)
    _view_module = Unicode(MODULE).tag(sync=True)
    _view_module_version = Unicode(VERSION).tag(sync=True)

    op_id = Unicode("").tag(sync=True)
    name = Unicode("").tag(sync=True)
    kind = Unicode("process").tag(sync=True)
    state = Unicode("running").tag(sync=True)
    reason = Unicode(None, allow_none=True).tag(sync=True)
    exit_code = Int(None, allow_none=True).tag(sync=True)
    started = Float(0.0).tag(sync=True)
    ended = Float(None, allow_none=True).tag(sync=True)
    n = Float(0.0).tag(sync=True)
    total = Float(None, allow_none=True).tag(sync=True)
    tail = Unicode("").tag(sync=True)
    rate = Unicode("").tag(sync=True)
    #: What the tree costs now (``CPU 98% · 45 MiB · 3 processes``), then at its end.
    resources = Unicode("").tag(sync=True)
    #: ``jc.progress(leave=False)`` completed: the view hides.
    hidden = Bool(False).tag(sync=True)

    def __repr__(self) -> str:
        # What a frontend without the widget shows (text/plain of the display).
        return f"{self.name} — {self.state}"


class WidgetFeeder:
    """Copies an operation's state and output tail into its widget, throttled."""

    _lock = threading.Condition()
    _dirty: dict[int, WidgetFeeder] = {}
    #: Feeders of running process trees: sampled every SAMPLE_EVERY while shown.
    _sampled: dict[int, WidgetFeeder] = {}
    _thread: threading.Thread | None = None

    def __init__(self, op: Operation, widget: OperationWidget) -> None:
        self.op = op
        self.widget = widget
        self.lines: deque[str] = deque(maxlen=TAIL_LINES)
        self.partial = ""
        widget.op_id = op.id
        widget.name = op.name
        widget.kind = op.kind
        widget.started = op.started
        self._sampled_at = 0.0
        op.on_output(self._output)
        if op.kind == "process":
            with WidgetFeeder._lock:
                WidgetFeeder._sampled[id(self)] = self

    def _output(self, _op: Operation, text: str) -> None:
        with self._lock:
            chunks = (self.partial + text).split("\n")
            self.partial = chunks.pop()[-2000:]
            self.lines.extend(line[-2000:] for line in chunks)
        self.touch()

    def touch(self) -> None:
        with WidgetFeeder._lock:
            WidgetFeeder._dirty[id(self)] = self
            if WidgetFeeder._thread is None:
                WidgetFeeder._thread = threading.Thread(
                    target=WidgetFeeder._run, name="jupyter_cancel-widgets", daemon=True
                )
                WidgetFeeder._thread.start()
            WidgetFeeder._lock.notify()

    def flush(self) -> None:
        op, w = self.op, self.widget
        with self._lock:
            tail = "\n".join(self.lines) + ("\n" + self.partial if self.partial else "")
        progress = op.progress or {}
        self._sample()
        with w.hold_sync():
            w.state = op.state.value
            w.reason = op.reason
            w.exit_code = op.exit_code
            w.ended = op.ended
            w.tail = tail.lstrip("\n")
            if op.resources is not None:
                w.resources = describe(op.resources)
            if progress:
                w.n = float(progress.get("n") or 0)
                total = progress.get("total")
                w.total = float(total) if total else None
                w.rate = str(progress.get("rate") or "")

    def clear(self) -> None:
        """``jc.progress(leave=False)`` completed: its widget hides (after the final state)."""
        self.flush()
        self.widget.hidden = True

    def _sample(self) -> None:
        """Sample the tree if it runs and a second passed (the end keeps the last totals)."""
        op = self.op
        if op.kind != "process":
            return
        if op.done:
            with WidgetFeeder._lock:
                WidgetFeeder._sampled.pop(id(self), None)
            op.sample_resources()
            return
        if time.monotonic() - self._sampled_at < SAMPLE_EVERY:
            return
        self._sampled_at = time.monotonic()
        op.sample_resources()

    @classmethod
    def _run(cls) -> None:
        while True:
            with cls._lock:
                while not cls._dirty:
                    if cls._sampled:
                        # Shown trees still running: their cost is refreshed each second.
                        if not cls._lock.wait(SAMPLE_EVERY):
                            cls._dirty.update(cls._sampled)
                    else:
                        cls._lock.wait()
                batch, cls._dirty = list(cls._dirty.values()), {}
            for feeder in batch:
                try:
                    feeder.flush()
                except Exception:
                    pass  # a closed comm: that display is gone
            time.sleep(INTERVAL)  # at most ~10 updates a second per widget
