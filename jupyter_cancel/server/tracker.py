"""The server's side of every trigger: client sessions, kernel actions, kernel death.

Owns one ``KernelLink`` per kernel. Acts *before* interrupt/restart/shutdown by asking the
kernel (control channel, bounded wait); when the kernel does not answer (hung, stopped,
dead) it terminates the trees it knows itself, identity checked, with the core's code.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any

from ..core.cgroup import Cgroup
from ..core.identity import process_of
from ..core.model import CancelReason, Reason, short, to_grace
from ..core.proctree import KERNEL_COOKIE, Tree, running
from ..core.selector import Selector
from ..protocol import EVENT, REPLY, REQUEST
from . import adapter, metrics, survey
from .clients import ClientSessions
from .events import OperationEvents, public_view
from .foreign import ForeignKernels
from .kernels import KernelLink
from .owned import ServerWork


class Tracker:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.log = app.log
        self.km = app.serverapp.kernel_manager
        self.links: dict[str, KernelLink] = {}
        self.events = OperationEvents(getattr(app.serverapp, "event_logger", None), self.log)
        #: The REST event streams' listeners (every kernel's events).
        self.listeners = self.events.listeners
        #: The browser clients of each kernel (a closed tab's work is cancelled).
        self.sessions = ClientSessions(
            app,
            self.log,
            cancel=self.cancel,
            reassign=self._reassign,
            kernels=lambda: [link.kernel_id for link in self.all_links()],
            seen=self.link,
        )
        self._restores: list[adapter.Restore] = []
        self._hooked: weakref.WeakSet[Any] = weakref.WeakSet()
        #: The trees the server ends itself (a kernel that does not answer, or has no extension).
        self.work = ServerWork(app.grace)
        #: Kernels without the kernel extension: the server owns their processes.
        self.foreign = ForeignKernels(self)
        metrics.bind(self.running, self.unkillable)

    # -- links -------------------------------------------------------------------
    def link(self, kernel_id: str) -> KernelLink | None:
        """The link to a running kernel (made on first use); None if no such kernel."""
        link = self.links.get(kernel_id)
        if link is not None:
            return link
        if kernel_id not in self.km:
            return None
        manager = self.km.get_kernel(kernel_id)
        link = KernelLink(kernel_id, manager, self.events.emit)
        if self.app.has_kernel_extension(kernel_id):
            link.answered()  # its extension answers: a kernel that stops answering is stalled
        try:
            link.connect()
        except Exception:
            self.log.warning("cannot connect to kernel %s", kernel_id, exc_info=True)
            return None
        self.links[kernel_id] = link
        if manager not in self._hooked:
            # Once per kernel manager: it outlives its links (restarts) and keeps callbacks.
            self._hooked.add(manager)
            adapter.on_death(manager, lambda state, kid=kernel_id: self._kernel_died(kid, state))
            adapter.after_every_restart(manager, lambda kid=kernel_id: self._restarted(kid))
        return link

    async def _restarted(self, kernel_id: str) -> None:
        """Every restart of a kernel — REST, or the restarter's after a death — gets a fresh
        link and the extension loaded again."""
        self.drop(kernel_id)
        if kernel_id in self.km:
            self.link(kernel_id)
            manager = self.km.get_kernel(kernel_id)
            cookie = self.foreign.restarted_cookie(kernel_id, manager)
            await self._own(kernel_id, manager, cookie)

    async def _own(self, kernel_id: str, manager: Any, cookie: str | None) -> None:
        """An IPython kernel started with the kernel extension is owned by it; any other has
        its processes owned by the server."""
        if self.app.has_kernel_extension(kernel_id):
            self.foreign.forget(kernel_id)
        else:
            await self.foreign.adopt(kernel_id, manager, cookie)

    def all_links(self) -> list[KernelLink]:
        for kernel_id in list(self.km.list_kernel_ids()):
            self.link(kernel_id)
        return [self.links[k] for k in list(self.links) if k in self.km]

    def drop(self, kernel_id: str, link: KernelLink | None = None) -> None:
        """Forget a kernel's link (only ``link`` if given: a newer one may have replaced it)."""
        if link is not None and self.links.get(kernel_id) is not link:
            link.close()
            return
        link = self.links.pop(kernel_id, None)
        if link is not None:
            link.close()

    def running(self) -> int:
        """Operations running now in every kernel's view (the running gauge)."""
        return sum(len(link.live) for link in list(self.links.values()))

    def unkillable(self) -> int:
        """Operations with processes that survived SIGKILL and still exist."""
        return sum(
            1
            for link in list(self.links.values())
            for op in link.operations()
            if any(running(pid) for pid in op.get("unkillable") or [] if isinstance(pid, int))
        )

    def find(self, op_id: str) -> tuple[KernelLink, dict[str, Any]] | None:
        for link in self.all_links():
            data = link.get(op_id)
            if data is not None:
                return link, data
        return None

    async def refresh(self, kernel_id: str | None = None) -> None:
        """Ask the kernels for their current operations (live pids): one control round trip
        each, concurrently, bounded; a kernel that does not answer keeps its last view."""
        links = [
            link
            for link in self.all_links()
            if (kernel_id is None or link.kernel_id == kernel_id)
            and link.kernel_id not in self.foreign.launches
        ]
        await asyncio.gather(
            self.foreign.scan(kernel_id), *(link.request({"action": "list"}, 0.5) for link in links)
        )

    async def resources(self, kernel_id: str | None = None) -> dict[str, dict[str, Any]]:
        """What each running process tree costs now, asked of the kernels that run process
        work (``survey.resources``)."""
        links = [link for link in self.all_links() if link.kernel_id not in self.foreign.launches]
        return await survey.resources(links, kernel_id)

    def operations(self, kernel_id: str | None = None) -> list[dict[str, Any]]:
        links = self.all_links()
        return [
            public_view(op)
            for link in links
            if kernel_id is None or link.kernel_id == kernel_id
            for op in link.operations()
        ]

    # -- cancelling --------------------------------------------------------------
    async def cancel(
        self,
        kernel_id: str,
        reason: str | CancelReason,
        selector: Selector,
        *,
        timeout: float | None = None,
    ) -> list[str]:
        """Ask the kernel to cancel what ``selector`` names (``all=True``: all its work the
        reason applies to; empty: nothing); if it does not answer in time, terminate what we
        know ourselves."""
        link = self.link(kernel_id)
        if link is None or selector.empty:
            return []
        launch = self.foreign.launches.get(kernel_id)
        if launch is not None:
            return await self.foreign.cancel(link, launch, reason, selector)
        content: dict[str, Any] = {
            "action": "cancel",
            "reason": CancelReason.of(reason).to_json(),
            **selector.to_json(),
        }
        wait = self.app.control_timeout if timeout is None else timeout
        started = time.monotonic()
        reply = await link.request(content, wait)
        self.log.debug(
            "cancel %s on kernel %s: reply in %.1f ms",
            short(content),
            kernel_id,
            (time.monotonic() - started) * 1000,
        )
        if reply is not None and reply.get("status") == "ok":
            return list(reply.get("cancelled") or [])
        if reply is not None:
            self.log.warning("kernel %s refused a cancel: %s", kernel_id, short(reply.get("evalue")))
            return []
        return await self.terminate_known(link, reason, selector)

    async def stop_cell(self, kernel_id: str, cell_id: str, reason: str | CancelReason) -> dict[str, Any]:
        """Stop one cell (its Python too, if running); ``{"cancelled", "running"}``. A kernel
        that does not answer gets the cell's trees ended by us, as ``cancel`` does."""
        link = self.link(kernel_id)
        if link is None or kernel_id in self.foreign.launches:
            return {"cancelled": [], "running": False}
        content = {"action": "stop_cell", "cell_id": cell_id, "reason": CancelReason.of(reason).to_json()}
        reply = await link.request(content, self.app.control_timeout)
        if reply is not None and reply.get("status") == "ok":
            return {"cancelled": list(reply.get("cancelled") or []), "running": bool(reply.get("running"))}
        if reply is not None:
            self.log.warning("kernel %s refused a cell stop: %s", kernel_id, short(reply.get("evalue")))
            return {"cancelled": [], "running": False}
        cancelled = await self.terminate_known(link, reason, Selector(cell_id=cell_id))
        return {"cancelled": cancelled, "running": False}

    async def terminate_known(
        self, link: KernelLink, reason: str | CancelReason, selector: Selector
    ) -> list[str]:
        """End the trees of the operations in ``link``'s view that ``selector`` names, ourselves
        (the kernel did not answer, or it has no extension to ask)."""
        why = CancelReason.of(reason)
        reported = [(op, self._tree(op)) for op in list(link.live.values()) if selector.matches(op)]
        chosen = self.work.choose(reported, why, by_id=selector.operation_ids is not None)
        if not chosen:
            return []
        self.log.warning("kernel %s did not answer: terminating %d trees itself", link.kernel_id, len(chosen))
        return await self.work.end_mirrored(link, chosen)

    def _tree(self, op: dict[str, Any]) -> Tree:
        root = process_of(op.get("root"))  # the process the kernel reported, or None
        cgroup = Cgroup(op["cgroup"]) if isinstance(op.get("cgroup"), str) else None
        try:
            grace = to_grace(op.get("grace"))  # the operation's own grace, as the kernel would
        except ValueError:
            grace = self.app.grace
        # A captured tree's root joined its cgroup after it started: walk and cookie too.
        return Tree(
            op_id=op["id"], root=root, grace=grace, cgroup=cgroup, cgroup_complete=not op.get("captured")
        )

    def _kernel_died(self, kernel_id: str, state: str) -> None:
        link = self.links.get(kernel_id)
        if link is None or self.foreign.died(kernel_id):
            return
        self.log.info(
            "kernel %s %s: ending its work", kernel_id, "died" if state == "dead" else "restarted after dying"
        )
        loop = asyncio.get_event_loop()
        loop.create_task(self._after_death(link))

    async def _after_death(self, link: KernelLink) -> None:
        await self.terminate_known(link, Reason.KERNEL_DIED, Selector(all=True))
        self.drop(link.kernel_id, link)

    async def health(self) -> list[dict[str, Any]]:
        """Per kernel: extension answering, watchdog alive, running and stuck operations."""
        links = self.all_links()
        return await survey.health(links, {link.kernel_id for link in links} & set(self.foreign.launches))

    async def _reassign(self, kernel_id: str, old: str, new: str) -> None:
        """A reloaded page's client session takes over the work of the one it replaces."""
        link = self.link(kernel_id)
        if link is None or kernel_id in self.foreign.launches:
            return
        reply = await link.request(
            {"action": "reassign", "client_session": old, "to": new}, self.app.control_timeout
        )
        if reply is None or reply.get("status") != "ok":
            self.log.warning("kernel %s did not move the work of %s to %s", kernel_id, old, new)

    # -- kernel actions ----------------------------------------------------------
    def install(self) -> None:
        adapter.untrack_message_types(
            self.km, (REQUEST, REPLY, EVENT, *adapter.SUBSHELL_MESSAGES), self.app.serverapp.web_app.settings
        )
        for name, reason, flag in (
            ("interrupt_kernel", Reason.KERNEL_INTERRUPT, "cancel_on_interrupt"),
            ("restart_kernel", Reason.KERNEL_RESTART, "cancel_on_restart"),
            ("shutdown_kernel", Reason.KERNEL_SHUTDOWN, "cancel_on_restart"),
        ):
            self._restores.append(
                adapter.wrap_kernel_action(self.km, name, self._acting_first(name, reason, flag))
            )
        self._restores.append(
            adapter.after_start(
                self.km,
                self._started,
                lambda: {**self.foreign.env(), **self.app.kernel_env()},
                self.app.kernel_arguments,
            )
        )

    async def _started(self, kernel_id: str, env: dict[str, str]) -> None:
        self.link(kernel_id)
        manager = self.km.get_kernel(kernel_id)
        cookie = env.get(KERNEL_COOKIE)
        self.foreign.launched(kernel_id, cookie, manager)
        await self._own(kernel_id, manager, cookie)

    def _acting_first(self, name: str, reason: str, flag: str) -> Any:
        """What runs around a kernel action: our cancel first, then the action."""

        async def around(original: Any, kernel_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if name != "interrupt_kernel" and kernel_id in self.km:
                manager = self.km.get_kernel(kernel_id)
                if name == "shutdown_kernel":
                    adapter.stop_restarting(manager)
                await adapter.settled(manager)  # not mid-start or mid auto-restart
            if getattr(self.app, flag) and kernel_id in self.km:
                try:
                    await self.cancel(kernel_id, reason, Selector(all=True))
                except Exception:
                    self.log.exception("cancelling before %s of %s failed", name, kernel_id)
            link = self.links.get(kernel_id)
            if name != "interrupt_kernel":
                self.foreign.exiting(kernel_id, reason)
            if name != "interrupt_kernel" and not args and link is not None and link.stalled:
                # It did not answer us: it will not answer a shutdown_request either, and
                # jupyter_client would wait its shutdown_wait_time (5 s) before killing it.
                self.log.info("kernel %s does not answer: %s without waiting", kernel_id, name)
                kwargs["now"] = True
            result = await original(kernel_id, *args, **kwargs)
            if name == "shutdown_kernel":
                self.foreign.forget_later(kernel_id)
                self.drop(kernel_id)
            return result

        return around

    def uninstall(self) -> None:
        while self._restores:
            self._restores.pop()()

    async def stop(self) -> None:
        """Server shutdown: everything but ``detach``, kernels asked first, then ourselves."""
        self.sessions.stop()
        links = self.all_links()
        await asyncio.gather(
            *(self.cancel(link.kernel_id, Reason.SERVER_SHUTDOWN, Selector(all=True)) for link in links)
        )
        self.foreign.stop()
        for link in links:
            self.drop(link.kernel_id)
        self.uninstall()
