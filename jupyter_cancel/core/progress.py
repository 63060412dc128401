"""``jc.progress``: a tqdm-like loop registered as an operation, so Stop ends it at its next
step. Drawn by the host (a widget in a kernel with the extension) or as a text line: ``\\r`` in
a terminal, one display updated in place in a kernel without the extension."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from .api import host, scope
from .model import State
from .operation import Operation

T = TypeVar("T")


class Progress:
    """A tqdm-like bar registered as an operation; raises ``Cancelled`` at the next step."""

    def __init__(
        self,
        iterable: Iterable[Any] | None,
        total: float | None,
        desc: str | None,
        *,
        unit: str = "it",
        unit_scale: bool = False,
        initial: float = 0,
        leave: bool = True,
    ) -> None:
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.iterable = iterable
        self.total = total
        self.desc = desc or "progress"
        self.unit = unit
        self.unit_scale = unit_scale
        #: False: the bar goes away once it completes (an inner loop of nested bars, as tqdm's).
        self.leave = leave
        self.n: float = initial
        self.initial = initial
        self.scope = scope(self.desc, kind="progress")
        self._entered = False
        self._last = 0.0
        #: What draws it: a text line unless the host shows it another way (or not at all).
        self.renderer: Any = TextBar(self)
        host().show_progress(self)

    @property
    def operation(self) -> Operation:
        return self.scope.operation

    def __enter__(self) -> Progress:
        if not self._entered:
            self._entered = True
            self.scope.__enter__()
            self._render(force=True)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        self._render(force=True)
        self.scope.__exit__(exc_type, exc, tb)
        self._render(force=True)
        if not self.leave and self.operation.state is State.COMPLETED and self.renderer is not None:
            clear = getattr(self.renderer, "clear", None)
            if clear is not None:
                clear()  # a stopped or failed bar stays: it says why

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("jc.progress() without an iterable: use update()")
        with self:
            for item in self.iterable:
                self.scope.raise_if_cancelled()
                yield item
                self.update(1)
            self.scope.raise_if_cancelled()

    def update(self, n: float = 1) -> None:
        """Advance by ``n``; raises ``Cancelled`` if a stop was requested."""
        if not self._entered:
            self.__enter__()
        self.n += n
        self._render()
        self.scope.raise_if_cancelled()

    def close(self) -> None:
        if self._entered and not self.operation.done:
            self.__exit__(None, None, None)

    def _render(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return  # at most ~10 updates a second
        self._last = now
        self.operation.set_progress(self.n, self.total, rate=progress_timing(self), unit=self.unit)
        if self.renderer is not None:
            self.renderer.render()


def _kernel_display() -> Callable[..., Any] | None:
    """IPython's ``display`` when this runs in a Jupyter kernel without the kernel extension
    (``nbconvert --execute``, VS Code): that kernel imported it already, the core imports
    nothing of Jupyter. None in a terminal."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None or getattr(shell, "kernel", None) is None:
        return None
    module = sys.modules.get("IPython.display") or sys.modules.get("IPython.core.display_functions")
    return getattr(module, "display", None)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _amount(value: float, scale: bool) -> str:
    """``value`` as tqdm shows it: ``1.5k``, ``2.3M`` with ``unit_scale``."""
    if scale:
        for prefix in ("", "k", "M", "G", "T"):
            if abs(value) < 1000:
                return f"{value:.3g}{prefix}"
            value /= 1000
        return f"{value:.3g}P"
    return f"{value:g}"


def progress_timing(bar: Progress, now: float | None = None) -> str:
    """``00:04<00:13, 5.20it/s`` (elapsed, ETA with a total, rate; ``s/it`` when slow)."""
    op = bar.operation
    elapsed = ((op.ended or time.time()) if now is None else now) - op.started
    rate = (bar.n - bar.initial) / elapsed if elapsed > 0 else 0.0
    if rate <= 0:
        speed = f"?{bar.unit}/s"
    elif rate >= 1 or bar.unit_scale:
        speed = f"{_amount(rate, bar.unit_scale) if bar.unit_scale else f'{rate:.2f}'}{bar.unit}/s"
    else:
        speed = f"{1 / rate:.2f}s/{bar.unit}"
    eta = ""
    if bar.total and not op.done:
        eta = "<" + (_clock((bar.total - bar.n) / rate) if rate > 0 else "?")
    return f"{_clock(elapsed)}{eta}, {speed}"


def progress_line(bar: Progress, now: float | None = None) -> str:
    """One line as tqdm writes it: ``desc: 23%|###       | 23/100 [00:04<00:13, 5.20it/s]``."""
    op = bar.operation
    timing = progress_timing(bar, now)
    count = _amount(bar.n, bar.unit_scale)
    if bar.total:
        share = min(1.0, bar.n / bar.total)
        filled = int(20 * share)
        line = (
            f"{bar.desc}: {share:4.0%}|{'#' * filled}{' ' * (20 - filled)}| "
            f"{count}/{_amount(bar.total, bar.unit_scale)} [{timing}]"
        )
    else:
        line = f"{bar.desc}: {count}{bar.unit} [{timing}]"
    if op.done:
        line += f" {op.state.value}" + (f" ({op.reason})" if op.reason else "")
    return line


class TextBar:
    """A text bar: redrawn in place — with ``\\r`` in a terminal, as one display updated in
    place in a kernel without the extension (one line in the saved notebook, not one stderr
    line per update)."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.display = _kernel_display()
        self.handle: Any = None

    def render(self) -> None:
        line = progress_line(self.bar)
        if self.display is not None:
            data = {"text/plain": line}
            if self.handle is None:
                self.handle = self.display(data, raw=True, display_id=True)
            else:
                self.handle.update(data, raw=True)
            return
        end = "\n" if self.bar.operation.done else ""
        sys.stderr.write("\r" + line + end)
        sys.stderr.flush()

    def clear(self) -> None:
        """``leave=False``: the bar goes (its display emptied; in a terminal, the line)."""
        if self.display is not None:
            if self.handle is not None:
                self.handle.update({"text/plain": ""}, raw=True)
            return
        sys.stderr.write("\x1b[1A\r\x1b[2K")  # the line the last render ended
        sys.stderr.flush()


#: tqdm arguments ``progress`` accepts and leaves to the front end (drawing details).
TQDM_ACCEPTED = frozenset(
    {
        "leave",
        "position",
        "ncols",
        "nrows",
        "mininterval",
        "maxinterval",
        "miniters",
        "ascii",
        "dynamic_ncols",
        "smoothing",
        "bar_format",
        "postfix",
        "colour",
        "delay",
        "file",
        "lock_args",
    }
)


def progress(
    iterable: Iterable[T] | None = None,
    total: float | None = None,
    desc: str | None = None,
    *,
    unit: str = "it",
    unit_scale: bool = False,
    initial: float = 0,
    disable: bool = False,
    **tqdm_kwargs: Any,
) -> Progress:
    """``for x in jc.progress(items): ...``: a bar with a stop; ``Cancelled`` at the next step.

    A drop-in for ``tqdm.auto.tqdm`` code: ``desc``, ``total``, ``unit``, ``unit_scale``,
    ``initial`` as tqdm has them; ``leave=False``: the bar goes once it completes (nested loops);
    ``disable=True`` still registers the loop (so Stop works) but draws nothing; tqdm's other
    drawing arguments (``position``, ``ncols``, …) are accepted and left to the front end. Another keyword is a ``TypeError``, as tqdm raises."""
    unknown = set(tqdm_kwargs) - TQDM_ACCEPTED
    if unknown:
        raise TypeError(f"jc.progress() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
    leave = bool(tqdm_kwargs.get("leave", True))
    bar = Progress(iterable, total, desc, unit=unit, unit_scale=unit_scale, initial=initial, leave=leave)
    if disable:
        bar.renderer = None
    return bar
