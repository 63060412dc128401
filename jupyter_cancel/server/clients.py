"""The browser clients of each kernel: a tab closed, a page gone (maybe reloading), a
connection lost — and the work of that client cancelled once it is really gone."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ..core.model import Reason
from ..core.selector import Selector

#: ``cancel(kernel_id, reason, selector)`` → the ids cancelled (the tracker's cancel).
Cancel = Callable[[str, str, Selector], Awaitable[list[str]]]
#: ``reassign(kernel_id, old_session, new_session)``: a reloaded page takes over the work.
Reassign = Callable[[str, str, str], Awaitable[None]]


class ClientSessions:
    """Connected clients per (kernel, client session), the countdowns of the gone ones, and
    the pages that went away within ``reload_grace`` (a reload takes their work over)."""

    def __init__(
        self,
        settings: Any,
        log: Any,
        *,
        cancel: Cancel,
        reassign: Reassign,
        kernels: Callable[[], list[str]],
        seen: Callable[[str], Any],
    ) -> None:
        #: The extension's settings (cancel_on_tab_close, tab_close_grace, reload_grace).
        self.settings = settings
        self.log = log
        self._cancel = cancel
        self._reassign = reassign
        self._kernels = kernels
        self._seen = seen
        self.clients: dict[tuple[str, str], int] = {}
        self._countdowns: dict[tuple[str, str], Any] = {}
        #: (kernel id, notebook path) → (client session, countdown) of a page gone, maybe reloading.
        self._reloads: dict[tuple[str, str], tuple[str, Any]] = {}
        #: Schedules the countdowns (``loop.call_later``); a test can drive its own clock.
        self.call_later: Callable[[float, Callable[[], Any]], Any] = lambda delay, fn: (
            asyncio.get_event_loop().call_later(delay, fn)
        )

    def has_clients(self, kernel_id: str, besides: str | None = None) -> bool:
        """Whether a browser client (other than session ``besides``) is connected to the kernel."""
        return any(n > 0 and s != besides for (k, s), n in self.clients.items() if k == kernel_id)

    def opened(self, kernel_id: str, session_id: str | None) -> None:
        """A client's websocket to the kernel opened."""
        if not session_id:
            return
        key = (kernel_id, session_id)
        self.clients[key] = self.clients.get(key, 0) + 1
        countdown = self._countdowns.pop(key, None)
        if countdown is not None:
            countdown.cancel()  # came back within the grace (reload, network blip)
        self._seen(kernel_id)

    def closed(self, kernel_id: str, session_id: str | None) -> None:
        """A client's websocket closed: its work is cancelled ``tab_close_grace`` later,
        unless it came back."""
        if not session_id:
            return
        key = (kernel_id, session_id)
        left = self.clients.get(key, 0) - 1
        if left > 0:
            self.clients[key] = left
            return
        self.clients.pop(key, None)
        if not self.settings.cancel_on_tab_close:
            return
        self._countdowns[key] = self.call_later(
            self.settings.tab_close_grace,
            lambda: asyncio.ensure_future(self._gone(key, Reason.CLIENT_DISCONNECTED)),
        )

    async def _gone(self, key: tuple[str, str], reason: str) -> None:
        self._countdowns.pop(key, None)
        if self.clients.get(key):
            return
        kernel_id, session_id = key
        cancelled = await self._cancel(kernel_id, reason, Selector(client_session=session_id))
        if cancelled:
            self.log.info("client %s of kernel %s gone: cancelled %s", session_id, kernel_id, cancelled)

    async def tab_closed(
        self, client_session: str, kernel_id: str | None = None, path: str | None = None
    ) -> list[str]:
        """The frontend says a notebook / tab closed: no grace, the user is gone — unless the
        whole page went away (``path`` given: its beacon), which may be a reload: then the
        work waits ``reload_grace`` for a page reopening ``path`` on that kernel to take it
        over (``reopened``), and is cancelled if none does."""
        if path is not None and kernel_id is not None and self.settings.reload_grace > 0:
            key = (kernel_id, path)
            pending = self._reloads.pop(key, None)
            if pending is not None:
                pending[1].cancel()
            handle = self.call_later(
                self.settings.reload_grace,
                lambda: asyncio.ensure_future(self._reload_expired(key, client_session)),
            )
            self._reloads[key] = (client_session, handle)
            return []
        kernels = [kernel_id] if kernel_id else self._kernels()
        cancelled: list[str] = []
        for kid in kernels:
            cancelled += await self._cancel(kid, Reason.TAB_CLOSED, Selector(client_session=client_session))
        return cancelled

    async def _reload_expired(self, key: tuple[str, str], client_session: str) -> None:
        pending = self._reloads.get(key)
        if pending is None or pending[0] != client_session:
            return  # taken over, or a newer close of the same notebook
        del self._reloads[key]
        cancelled = await self.tab_closed(client_session, key[0])
        if cancelled:
            self.log.info("page of %s gone (not reloaded): cancelled %s", key[1], cancelled)

    async def reopened(self, client_session: str, kernel_id: str, path: str) -> str | None:
        """A page opened notebook ``path`` on ``kernel_id``: if a page showing it went away
        within ``reload_grace`` (a reload), this one takes over that page's work. The client
        session it replaces, or None."""
        pending = self._reloads.pop((kernel_id, path), None)
        if pending is None or pending[0] == client_session:
            return None
        old, handle = pending
        handle.cancel()
        countdown = self._countdowns.pop((kernel_id, old), None)
        if countdown is not None:
            countdown.cancel()
        await self._reassign(kernel_id, old, client_session)
        self.log.info("page reloaded: %s on kernel %s, work of %s kept", path, kernel_id, old)
        return old

    def stop(self) -> None:
        """Server shutdown: no countdown fires after it."""
        for countdown in self._countdowns.values():
            countdown.cancel()
        self._countdowns.clear()
