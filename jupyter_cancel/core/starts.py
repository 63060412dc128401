"""The ways work becomes an operation of a registry, beyond ``Registry.launch``: a process tree
started here (``start_process``), a process another route started (``expect_process``, then
``adopt_process``: capture, ``jc.adopt``), a block of code (``new_scope``) and an asyncio task
(``new_task``).

Each is built on the registry's public verbs (``new``, ``register``, ``attach``, ``launch``,
``finish``) and its plumbing (``trees``: spawning and watching; ``adoptions``: a captured child
until it is watched). The registry itself only originates and records.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from .adoption import Expected
from .model import Policy, State
from .operation import Operation
from .proctree import is_protected
from .registry import Registry
from .runners import TaskRunner
from .scope import CancelScope

T = TypeVar("T")


def start_process(
    registry: Registry,
    argv: Sequence[str],
    *,
    name: str,
    policy: object = Policy.CANCEL,
    grace: object = None,
    timeout: object = None,
    key: str | None = None,
    owner: Mapping[str, Any] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    prepare: Callable[[Operation], None] | None = None,
) -> Operation:
    """Start ``argv`` as a process tree (own session, cookie, cgroup where writable) and
    return its running operation. ``prepare(op)`` runs before the process starts (attach
    output listeners there). A spawn failure ends the operation ``failed`` and raises.

    Registered before the spawn: a keyed start ends the previous copy first, and a trigger
    that comes meanwhile finds it (then nothing is spawned)."""
    op = registry.new(
        name=name[:200], kind="process", policy=policy, grace=grace, timeout=timeout, key=key, owner=owner
    )
    if prepare is not None:
        prepare(op)
    if not registry.register(op, announce=False) or op.cancel_requested:
        registry.finish(op, State.CANCELLED)
        return op
    try:
        runner = registry.trees.spawn(op, argv, cwd=cwd, env=env)
    except OSError as err:
        op.error = str(err)
        registry.finish(op, State.FAILED)
        raise
    registry.attach(op, runner)
    return op


def expect_process(
    registry: Registry,
    *,
    name: str,
    op_id: str | None = None,
    policy: object = Policy.CANCEL,
    grace: object = None,
    owner: Mapping[str, Any] | None = None,
) -> Operation:
    """Register the operation of a process about to be started by some other route (its
    ``adopt_process`` follows), quietly: a trigger between the spawn and the adoption still reaches it."""
    op = registry.new(name=name[:200], kind="process", policy=policy, grace=grace, owner=owner, op_id=op_id)
    registry.register(op, announce=False, quiet=True)
    return op


def expect_spawn(
    registry: Registry, op_id: str, argv: Any, *, policy: Policy, owner: Mapping[str, Any]
) -> Expected:
    """A process about to be started by another route (capture), not an operation yet: tell
    ``registry.adoptions.spawned`` once its child exists. Its operation is made later, in a
    batch (most such processes end within milliseconds, and making one right after a ``fork``
    costs the spawning thread most), or first by anything that reads the registry — a
    trigger, a listing — so none misses it."""
    expected = Expected(op_id, argv, policy, owner)
    registry.adoptions.expect(expected)
    return expected


def adopt_process(
    registry: Registry,
    pid: int,
    *,
    name: str = "",
    op: Operation | None = None,
    popen: Any = None,
    policy: object = Policy.CANCEL,
    grace: object = None,
    owner: Mapping[str, Any] | None = None,
    cgroup: bool = True,
    defer: bool = False,
) -> Operation:
    """Take a running child process (and its tree) under ``registry``, started by any route:
    the same triggers and termination as ``start_process``, but its root is never reaped here. ``op``
    is its ``expect_process``-ed operation, if any (cancelled meanwhile: the tree is ended at once).
    ``KeyError`` if there is no such process, or if ``pid`` names this process or one of its
    ancestors (never ours to end).

    ``defer`` (capture): the child is watched only if it lives ``ADOPT_AFTER`` — most
    captured processes end within milliseconds and then cost nothing more. A ``Popen``'s
    child is not even pinned meanwhile: this process is its parent, so its pid stays its
    own until reaped, and only its ``Popen`` reaps it (whose returncode then says so; a
    ``waitid`` names only our own unreaped children). A child of another route (``fork``,
    ``posix_spawn``) is pinned now by a pidfd. A trigger meanwhile adopts it at once; a
    death of this process meanwhile is covered by the watchdog's cookie sweep."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or is_protected(pid):
        if op is not None:
            registry.finish(op, State.FAILED)
        raise KeyError(pid)
    if op is None:
        op = expect_process(registry, name=name or f"pid {pid}", policy=policy, grace=grace, owner=owner)
    if not (defer and registry.adoptions.defer(op, pid, popen, cgroup)):
        registry.adoptions.now(op, pid, popen, cgroup)
    return op


def new_scope(
    registry: Registry,
    name: str,
    *,
    kind: str = "scope",
    policy: object = Policy.CANCEL,
    grace: object = None,
    timeout: object = None,
    owner: Mapping[str, Any] | None = None,
) -> CancelScope:
    """A ``CancelScope`` whose operation registers when the block is entered."""
    op = registry.new(name=name, kind=kind, policy=policy, grace=grace, timeout=timeout, owner=owner)

    def enter(scope: CancelScope) -> None:
        registry.attach(op, scope)
        registry.register(op)

    return CancelScope(op, enter)


def new_task(
    registry: Registry,
    coro: Coroutine[Any, Any, T],
    loop: asyncio.AbstractEventLoop,
    *,
    name: str,
    policy: object = Policy.CANCEL,
    grace: object = None,
    owner: Mapping[str, Any] | None = None,
) -> asyncio.Task[T]:
    """Schedule ``coro`` on ``loop`` as an operation; the Task (cancelled if a cancel came first)."""

    made: list[asyncio.Task[T]] = []

    def run(op: Operation) -> TaskRunner:
        made.append(loop.create_task(coro, name=f"jupyter_cancel:{op.id}"))
        runner = TaskRunner(made[0], loop)
        runner.watch(op)
        return runner

    op = registry.launch(run, name=name, kind="task", policy=policy, grace=grace, owner=owner)
    if op.done:  # cancelled before it could start (a closed registry, a remembered cancel)
        made[0].cancel()
    return made[0]
