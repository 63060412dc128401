"""The public API in plain Python: ``start``, ``run``, ``scope``, ``task`` (``progress`` is in
``progress.py``).

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
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from .buildoutput import BuildProgress
from .errors import Cancelled
from .model import Policy, Reason, to_policy
from .operation import Operation
from .registry import Registry
from .scope import CancelScope
from .starts import adopt_process, new_scope, new_task, start_process

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

    def show_progress(self, bar: Any) -> None:
        """A ``progress.Progress`` starts: replace its ``renderer`` (a text bar) to show it
        another way, or set it to None to draw nothing."""


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
    return adopt_process(
        registry(),
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

    return start_process(
        registry(),
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
    return new_scope(
        registry(),
        name or kind,
        kind=kind,
        policy=_policy(policy),
        grace=grace,
        timeout=timeout,
        owner=_host.owner(),
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
    return new_task(
        registry(), coro, loop, name=label, policy=_policy(policy), grace=grace, owner=_host.owner()
    )


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


__all__ = [
    "Cancelled",
    "adopt",
    "current_policy",
    "policy_override",
    "policy",
    "Host",
    "cancel",
    "cancel_all",
    "host",
    "operations",
    "registry",
    "run",
    "scope",
    "set_host",
    "start",
    "task",
]
