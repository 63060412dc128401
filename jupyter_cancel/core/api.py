"""The public API in plain Python: ``start``, ``run``, ``scope``, ``task``, ``progress``.

The same functions serve a notebook: the kernel extension installs a ``Host`` that
supplies owner tags (kernel, client session, cell) and a display. Without it, output is
echoed to the terminal and progress is a text bar on stderr.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from .buildoutput import BuildProgress
from .errors import Cancelled
from .model import Policy, Reason, State, to_policy
from .operation import Operation
from .registry import Registry
from .scope import CancelScope

T = TypeVar("T")


class Host:
    """What the environment supplies. The plain-Python host: no owner, terminal output."""

    def owner(self) -> dict[str, Any]:
        return {}

    def show(self, op: Operation) -> None:
        """Display a process operation's live output (called before it starts)."""

        def echo(_op: Operation, text: str) -> None:
            sys.stdout.write(text)
            sys.stdout.flush()

        op.on_output(echo)

    def finished(self, op: Operation) -> None:
        """The operation ended and ``run`` is about to return: flush its display."""

    def interrupted(self, op: Operation) -> None:
        """``run`` was interrupted (Ctrl+C) and has cancelled ``op``: what to raise."""
        raise KeyboardInterrupt

    def show_progress(self, bar: Progress) -> None:
        bar.renderer = _TextBar(bar)


_lock = threading.Lock()
_registry: Registry | None = None
_host: Host = Host()
_default_policy: Policy = Policy.CANCEL


def registry() -> Registry:
    """This process's registry (created on first use; closed at interpreter exit)."""
    global _registry
    with _lock:
        if _registry is None:
            _registry = Registry()
            atexit.register(_registry.close, Reason.KERNEL_SHUTDOWN)
        return _registry


def set_host(host: Host | None) -> None:
    """Install the environment's host (the kernel extension does); None restores the plain one."""
    global _host
    _host = host if host is not None else Host()


def host() -> Host:
    return _host


def set_default_policy(policy: str | Policy) -> None:
    """The policy of work that names none (the server's ``JupyterCancel.default_policy``)."""
    global _default_policy
    _default_policy = to_policy(policy)


_POLICY: contextvars.ContextVar[Policy | None] = contextvars.ContextVar("jupyter_cancel_policy", default=None)
#: Threads carry the policy of the block that started them (set by the kernel extension).
THREAD_POLICY_ATTR = "jupyter_cancel_policy"


def policy_override() -> Policy | None:
    """The policy of the ``policy()`` block that applies here (this context, or the block the
    thread's starter was in); None outside any."""
    chosen = _POLICY.get() or getattr(threading.current_thread(), THREAD_POLICY_ATTR, None)
    return chosen if isinstance(chosen, Policy) else None


def current_policy() -> Policy:
    """The policy work started here gets: a ``policy()`` block's, else the default."""
    return policy_override() or _default_policy


@contextlib.contextmanager
def policy(value: str | Policy) -> Iterator[None]:
    """Everything started inside — ``jc.start``, plain ``subprocess``, a library's processes,
    threads started here — gets this policy: ``with jc.policy("continue"): server = Popen(...)``."""
    token = _POLICY.set(to_policy(value))
    try:
        yield
    finally:
        _POLICY.reset(token)


def _policy(policy: str | Policy | None) -> str | Policy:
    return current_policy() if policy is None else policy


def adopt(
    target: int | Any,
    *,
    policy: str | Policy | None = None,
    name: str | None = None,
    grace: float | None = None,
) -> Operation:
    """Take a running process (a pid, or a ``Popen``) and its tree under the registry as an
    operation of the current cell, with ``policy``; ``KeyError`` if there is no such process."""
    pid = target if isinstance(target, int) and not isinstance(target, bool) else getattr(target, "pid", None)
    if not isinstance(pid, int):
        raise TypeError(f"jc.adopt needs a pid or a Popen, not {type(target).__name__}")
    args = getattr(target, "args", None)
    if name is None:
        name = args if isinstance(args, str) else shlex.join(map(str, args)) if args else f"pid {pid}"
    return registry().adopt(
        pid,
        name=name,
        popen=target if args is not None else None,
        policy=_policy(policy),
        grace=grace,
        owner=_host.owner(),
    )


def _argv(cmd: str | Sequence[str], shell: bool) -> list[str]:
    if isinstance(cmd, str):
        if not cmd.strip():
            raise ValueError("cmd must not be empty")
        return ["/bin/sh", "-c", cmd] if shell else shlex.split(cmd)
    if isinstance(cmd, (bytes, bytearray)) or not isinstance(cmd, Sequence):
        raise TypeError(f"cmd must be a string or a list of strings, not {type(cmd).__name__}")
    argv = [os.fspath(a) for a in cmd]
    if not argv:
        raise ValueError("cmd must not be empty")
    if shell:
        return ["/bin/sh", "-c", shlex.join(argv)]
    return argv


def start(
    cmd: str | Sequence[str],
    *,
    shell: bool = False,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    name: str | None = None,
    policy: str | Policy | None = None,
    timeout: float | None = None,
    grace: float | None = None,
    display: bool = True,
    key: str | None = None,
    owner: Mapping[str, Any] | None = None,
    on_start: Callable[[Operation], None] | None = None,
) -> Operation:
    """Start a process tree as an operation and return it at once (see ``run``).

    ``on_start(op)`` is called before the process starts (add output listeners there)."""
    argv = _argv(cmd, shell)
    label = name or (cmd if isinstance(cmd, str) else shlex.join(argv))

    def prepare(op: Operation) -> None:
        op.on_output(BuildProgress())
        if on_start is not None:
            on_start(op)
        if display:
            _host.show(op)

    return registry().start(
        argv,
        name=label,
        policy=_policy(policy),
        grace=grace,
        timeout=timeout,
        key=key,
        owner=owner if owner is not None else _host.owner(),
        cwd=cwd,
        env=env,
        prepare=prepare,
    )


def run(cmd: str | Sequence[str], **kwargs: Any) -> Operation:
    """Run a process tree to its end, showing its output; return the Operation.

    Raises ``Cancelled`` (with ``.reason`` and ``.operation``) if it was cancelled, so
    the code after it does not run. A non-zero exit is not an error: see ``.returncode``.
    """
    op = start(cmd, **kwargs)
    try:
        op.wait()
    except KeyboardInterrupt:
        op.cancel(Reason.KERNEL_INTERRUPT)
        _host.finished(op)
        _host.interrupted(op)
        raise
    _host.finished(op)
    return op.result()


def scope(
    name: str | None = None,
    *,
    policy: str | Policy | None = None,
    grace: float | None = None,
    timeout: float | None = None,
    kind: str = "scope",
) -> CancelScope:
    """A cancel scope for in-process work: ``with jc.scope() as s: ... s.raise_if_cancelled()``."""
    return registry().scope(
        name or kind, kind=kind, policy=_policy(policy), grace=grace, timeout=timeout, owner=_host.owner()
    )


def task(
    coro: Coroutine[Any, Any, T],
    name: str | None = None,
    *,
    policy: str | Policy | None = None,
    grace: float | None = None,
) -> asyncio.Task[T]:
    """Schedule ``coro`` on the running event loop as an operation; return the Task."""
    if not asyncio.iscoroutine(coro):
        raise TypeError(f"jc.task needs a coroutine, not {type(coro).__name__}")
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        coro.close()
        raise RuntimeError("jc.task needs a running event loop (call it from async code)") from None
    label = name or str(getattr(coro, "__qualname__", "task"))
    return registry().task(coro, loop, name=label, policy=_policy(policy), grace=grace, owner=_host.owner())


def operations(*, include_done: bool = False) -> list[Operation]:
    """Live operations of this process (with ``include_done``: recent finished ones too)."""
    return registry().operations(include_done=include_done)


def cancel(op_or_id: Operation | str, reason: str = Reason.USER, *, wait: bool = True) -> list[Operation]:
    """Cancel one operation (whatever its policy); ``KeyError`` naming an unknown id."""
    op_id = op_or_id.id if isinstance(op_or_id, Operation) else op_or_id
    if not isinstance(op_id, str):
        raise TypeError(f"expected an Operation or an id string, not {type(op_or_id).__name__}")
    return registry().cancel(op_id, reason, wait=wait)


def cancel_all(reason: str = Reason.USER, *, wait: bool = True) -> list[Operation]:
    """Cancel every live operation that ``reason`` applies to."""
    return registry().cancel_all(reason, wait=wait)


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
        self.renderer: Any = None
        self.scope = scope(self.desc, kind="progress")
        self._entered = False
        self._last = 0.0
        _host.show_progress(self)

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


class _TextBar:
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


__all__ = [
    "Cancelled",
    "adopt",
    "current_policy",
    "policy_override",
    "policy",
    "Host",
    "Progress",
    "cancel",
    "cancel_all",
    "host",
    "operations",
    "progress",
    "registry",
    "run",
    "scope",
    "set_host",
    "start",
    "task",
]
