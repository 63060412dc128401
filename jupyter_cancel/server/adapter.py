"""The jupyter_server and jupyter_client internals the server extension relies on, in one place.

Checked against jupyter_server 2.21.1 and jupyter_client 8.10.0 (and the 2.10+/8.x lines'
same attributes): the multi-kernel manager's ``start_kernel`` / ``interrupt_kernel`` /
``restart_kernel`` / ``shutdown_kernel`` (wrapped per instance: the class is built before
extensions load, so ``kernel_manager_class`` cannot be replaced); a kernel's own manager's
``restart_kernel`` (jupyter_client's restarter calls it after a death, bypassing the multi
manager) and ``add_restart_callback(cb, "restart" | "dead")`` and ``update_env`` (8.5+: the environment a
restart reuses); ``provisioner.process`` (local provisioners: the kernel's Popen); ``untracked_message_types``
(control messages listed there do not flip the notebook's busy/idle status); the
``kernel_websocket_connection_class`` setting and its ``connect``/``disconnect``,
``kernel_id``, ``session_id``. When one of these changes, this module is what changes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

Restore = Callable[[], None]


def on_loop(loop: asyncio.AbstractEventLoop, callback: Callable[..., Any]) -> Callable[..., None]:
    """``callback`` run on ``loop`` (the server's), whatever thread calls the result: a
    synchronous ``MappingKernelManager`` runs its kernels' streams and restarters on
    jupyter_core's runner thread, and an asyncio future resolved from there neither is
    thread-safe nor wakes the loop."""

    def handoff(*args: Any) -> None:
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is loop:
            callback(*args)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(callback, *args)

    return handoff


async def _maybe_await(result: Any) -> Any:
    if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
        return await result
    return result


def wrap_kernel_action(
    km: Any,
    name: str,
    around: Callable[[Callable[..., Any], str, tuple[Any, ...], dict[str, Any]], Awaitable[Any]],
) -> Restore:
    """Replace ``km.<name>(kernel_id, ...)`` with ``around(original, kernel_id, args, kwargs)``
    (an async function that calls ``original`` itself); returns the undo."""
    original = getattr(km, name)

    async def wrapped(kernel_id: str, *args: Any, **kwargs: Any) -> Any:
        return await around(lambda *a, **k: _maybe_await(original(*a, **k)), kernel_id, args, kwargs)

    setattr(km, name, wrapped)
    return lambda: setattr(km, name, original)


def after_start(
    km: Any,
    action: Callable[[str, dict[str, str]], Awaitable[None]],
    env: Callable[[], dict[str, str]] = dict,
    arguments: Callable[[str | None], list[str]] = lambda name: [],
) -> Restore:
    """Start each kernel with ``env()`` added to its environment and ``arguments(kernel_name)``
    to its command line, then ``await action(kernel_id, added)`` before ``start_kernel``
    returns — or, for a pending kernel (``use_pending_kernels``: the start returns before the
    kernel is up), once it is up, without holding up the start. Both are launch arguments
    (``env=``, ``extra_arguments=``), which jupyter_client reuses for every restart."""
    original = km.start_kernel
    later: set[asyncio.Task[None]] = set()

    async def start_kernel(*args: Any, **kwargs: Any) -> Any:
        added = env()
        if added:
            kwargs["env"] = {**(kwargs.get("env") or os.environ), **added}
        extra = arguments(kwargs.get("kernel_name"))
        if extra:
            kwargs["extra_arguments"] = [*(kwargs.get("extra_arguments") or []), *extra]
        kernel_id = await _maybe_await(original(*args, **kwargs))
        ready = _ready(km, kernel_id)
        if ready is None:
            await action(kernel_id, added)
            return kernel_id

        async def when_up() -> None:
            try:
                await ready
            except Exception:
                return  # it failed to start: nothing to act on
            await action(kernel_id, added)

        task = asyncio.ensure_future(when_up())
        later.add(task)
        task.add_done_callback(later.discard)
        return kernel_id

    km.start_kernel = start_kernel
    return lambda: setattr(km, "start_kernel", original)


def _ready(km: Any, kernel_id: str) -> Awaitable[Any] | None:
    """The pending start of a kernel (None if it is up already)."""
    try:
        ready = getattr(km.get_kernel(kernel_id), "ready", None)
    except KeyError:
        return None
    if isinstance(ready, concurrent.futures.Future):
        return None if ready.done() else asyncio.wrap_future(ready)
    if isinstance(ready, asyncio.Future) and not ready.done():
        return asyncio.shield(ready)
    return None


def after_every_restart(manager: Any, action: Callable[[], Awaitable[None]]) -> None:
    """``await action()`` after each restart of one kernel: REST ones and the restarter's. A
    synchronous manager's ``restart_kernel`` stays synchronous (its restarter calls it on
    its own thread): the action then runs on the server's loop."""
    original = manager.restart_kernel
    if not asyncio.iscoroutinefunction(original):
        loop = asyncio.get_event_loop()
        schedule = on_loop(loop, lambda: asyncio.ensure_future(action()))

        def restart_kernel_sync(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            schedule()
            return result

        manager.restart_kernel = restart_kernel_sync
        return

    async def restart_kernel(*args: Any, **kwargs: Any) -> Any:
        result = await _maybe_await(original(*args, **kwargs))
        await action()
        return result

    manager.restart_kernel = restart_kernel


def set_restart_env(manager: Any, env: dict[str, str]) -> None:
    """What the kernel's next start (a restart: REST or the restarter's) adds to its
    environment (``KernelManager.update_env``, jupyter_client 8.5+)."""
    update = getattr(manager, "update_env", None)
    if callable(update):
        update(env=env)


def shell_request(
    manager: Any, msg_type: str, content: dict[str, Any], timeout: float
) -> asyncio.Future[dict[str, Any] | None]:
    """Send the kernel one shell request now, on a shell channel of our own; the future
    resolves to the reply (header and content), or None if none came within ``timeout``."""
    stream = manager.connect_shell()
    msg = manager.session.msg(msg_type, content)
    loop = asyncio.get_running_loop()
    replied: asyncio.Future[dict[str, Any] | None] = loop.create_future()

    def resolve(reply: dict[str, Any]) -> None:
        if not replied.done():
            replied.set_result(reply)

    def on_reply(parts: list[Any]) -> None:  # on the manager's loop, maybe another thread
        try:
            _, parts = manager.session.feed_identities(parts)
            reply = manager.session.deserialize(parts)
        except Exception:
            return
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            settle(reply)

    settle = on_loop(loop, resolve)

    def give_up() -> None:
        if not replied.done():
            replied.set_result(None)

    stream.on_recv(on_reply)
    manager.session.send(stream, msg)
    timer = loop.call_later(timeout, give_up)
    replied.add_done_callback(lambda _: (timer.cancel(), stream.close()))
    return replied


def reply_stamp(reply: dict[str, Any] | None) -> float | None:
    """The wall-clock time a kernel stamped on its reply (its header's ``date``; now if it has
    none); None for no reply."""
    if reply is None:
        return None
    date = reply["header"].get("date")
    return date.timestamp() if hasattr(date, "timestamp") else time.time()


def on_death(manager: Any, callback: Callable[[str], None]) -> None:
    """``callback("dead")`` when the kernel died for good, ``callback("restart")`` when it died
    and is about to be restarted by jupyter_client's restarter."""
    call = on_loop(asyncio.get_event_loop(), callback)  # the restarter may run on another thread
    for state in ("restart", "dead"):
        manager.add_restart_callback(lambda s=state: call(s), state)


#: ipywidgets' control requests (kernel subshells, ipykernel 7): no user's activity.
SUBSHELL_MESSAGES = (
    "create_subshell_request",
    "create_subshell_reply",
    "delete_subshell_request",
    "delete_subshell_reply",
    "list_subshell_request",
    "list_subshell_reply",
)


def untrack_message_types(km: Any, types: Iterable[str], settings: dict[str, Any] | None = None) -> None:
    """Leave these message types out of jupyter_server's activity tracking — and out of
    JupyterLab's kernel status, which ignores the status messages of the same list (a page
    config option, copied from it when JupyterLab loads, maybe before us: ``settings``'s
    ``page_config_data`` is updated too). Without it, the ``idle`` ending a widget's
    ``create_subshell_request`` turned the status bar to Idle while the cell still ran."""
    for msg_type in types:
        if msg_type not in km.untracked_message_types:
            km.untracked_message_types.append(msg_type)
    if settings is not None:
        settings.setdefault("page_config_data", {})["untracked_message_types"] = list(
            km.untracked_message_types
        )


def kernel_pid(manager: Any) -> int | None:
    """The kernel process's pid (local provisioners only)."""
    process = getattr(getattr(manager, "provisioner", None), "process", None)
    return getattr(process, "pid", None)


def track_kernel_websockets(
    settings: dict[str, Any],
    opened: Callable[[str, str | None], None],
    closed: Callable[[str, str | None], None],
) -> None:
    """Call ``opened(kernel_id, session_id)`` / ``closed(...)`` for each kernel websocket."""
    base = settings["kernel_websocket_connection_class"]

    class TrackedConnection(base):  # type: ignore[misc, valid-type]
        _jc_open = False

        def connect(self) -> Any:
            self._jc_open = True
            opened(self.kernel_id, self.session_id)
            return super().connect()

        def disconnect(self) -> Any:
            if self._jc_open:
                self._jc_open = False
                closed(self.kernel_id, self.session_id)
            return super().disconnect()

    settings["kernel_websocket_connection_class"] = TrackedConnection


async def settled(manager: Any, timeout: float = 30.0) -> None:
    """Wait (bounded) while a kernel is between states — mid-start or mid auto-restart, its
    ``ready`` future pending. jupyter_client's shutdown then reads ``ready.exception()`` of a
    pending future and raises InvalidStateError (checked against jupyter_client 8.10.0)."""
    ready = getattr(manager, "ready", None)
    if isinstance(ready, asyncio.Future) and not ready.done():
        try:
            await asyncio.wait_for(asyncio.shield(ready), timeout)
        except Exception:  # it failed or took too long: shutting it down is right either way
            pass


def stop_restarting(manager: Any) -> None:
    """No auto-restart from now on (the kernel is being shut down): jupyter_client's restarter
    could otherwise start one between our cancel and the shutdown, and the multi-kernel
    manager's shutdown then fails on the restart's pending ``ready``."""
    stop = getattr(manager, "stop_restarter", None)
    if callable(stop):
        stop()
