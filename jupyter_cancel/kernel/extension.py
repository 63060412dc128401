"""``%load_ext jupyter_cancel``: the triggers a kernel sees, wired to the registry.

* before each cell runs: owner tags captured; the cell's earlier work cancelled
  (``cell_rerun``) and waited for; work of ``metadata.deletedCells`` cancelled;
* SIGINT (busy or idle) and the control ``interrupt_request``: every operation but
  ``detach`` cancelled (``kernel_interrupt``), background work included;
* ``shutdown_request`` (restart or not) and interpreter exit: ``kernel_restart`` /
  ``kernel_shutdown``; kernel death: the watchdog;
* ``jupyter_cancel_request`` on the control channel;
* ``!cmd`` shell escapes run as operations.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from ..core import api
from ..core.model import Reason
from ..core.registry import Registry
from . import control
from .host import _OWNER, _THREAD_ATTR, KernelHost, current_owner, kernel_id_of

log = logging.getLogger(__name__)


class KernelIntegration:
    """Everything ``load`` installs, so that ``unload`` can take it all back."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.kernel = getattr(shell, "kernel", None)
        self.registry: Registry = api.registry()
        self.host = KernelHost(self.kernel, kernel_id_of(self.kernel) if self.kernel else None)
        self._saved: dict[str, Any] = {}
        #: Set by the server (JupyterCancel.cancel_on_rerun / cancel_on_interrupt) via ``configure``.
        self.cancel_on_rerun = True
        self.cancel_on_interrupt = True

    # -- install / uninstall -------------------------------------------------------
    def install(self) -> None:
        api.set_host(self.host)
        self.shell.events.register("pre_run_cell", self.pre_run_cell)
        self._patch_thread_start()
        self._saved["system"] = self.shell.__dict__.get("system")
        self.shell.system = self.system
        if self.kernel is not None:
            self._install_kernel_hooks()
            self._saved["unsubscribe"] = self.registry.subscribe_batch(self.publish_events)
            try:
                self.kernel.comm_manager.register_target("jupyter_cancel", self._frontend_announced)
            except Exception:
                log.debug("no comm manager: plain output only", exc_info=True)
        if self.registry._use_watchdog:
            # Started and waited for now (~0.1 s, once): work started later is covered from its first ms.
            self.registry._get_watchdog().wait_ready(5.0)

    def uninstall(self) -> None:
        self.shell.events.unregister("pre_run_cell", self.pre_run_cell)
        threading.Thread.start = self._saved.pop("thread_start")  # type: ignore[method-assign]
        if self._saved.get("system") is None:
            self.shell.__dict__.pop("system", None)
        else:
            self.shell.system = self._saved["system"]
        if self.kernel is not None:
            kernel = self.kernel
            self._saved.pop("unsubscribe")()
            try:
                self.kernel.comm_manager.unregister_target("jupyter_cancel", self._frontend_announced)
            except Exception:
                pass
            kernel.control_handlers.pop(control.REQUEST, None)
            kernel.control_handlers["interrupt_request"] = self._saved["interrupt_request"]
            for name in ("pre_handler_hook", "post_handler_hook", "do_shutdown"):
                kernel.__dict__.pop(name, None)
            signal.signal(signal.SIGINT, signal.default_int_handler)  # we are inside a cell
        api.set_host(None)

    def _patch_thread_start(self) -> None:
        original = threading.Thread.start
        self._saved["thread_start"] = original

        def start(thread: threading.Thread) -> None:
            # A thread belongs to the cell that started it, whatever cell runs later.
            if getattr(thread, _THREAD_ATTR, None) is None:
                setattr(thread, _THREAD_ATTR, current_owner())
            original(thread)

        threading.Thread.start = start  # type: ignore[method-assign]

    def _install_kernel_hooks(self) -> None:
        kernel = self.kernel
        kernel.control_handlers[control.REQUEST] = self.control_request
        self._saved["interrupt_request"] = kernel.control_handlers.get("interrupt_request")
        kernel.control_handlers["interrupt_request"] = self.interrupt_request
        # ipykernel ignores SIGINT while idle: our handler sees it, busy or idle.
        kernel.pre_handler_hook = self.pre_handler_hook
        kernel.post_handler_hook = self.post_handler_hook
        original_shutdown = kernel.do_shutdown

        def do_shutdown(restart: bool) -> Any:
            self.registry.close(Reason.KERNEL_RESTART if restart else Reason.KERNEL_SHUTDOWN)
            return original_shutdown(restart)

        kernel.do_shutdown = do_shutdown
        signal.signal(signal.SIGINT, self._busy_sigint)  # loading happens inside a cell

    # -- triggers ------------------------------------------------------------------
    def pre_run_cell(self, info: Any) -> None:
        parent: dict[str, Any] = {}
        if self.kernel is not None:
            try:
                parent = self.kernel.get_parent("shell") or {}
            except Exception:
                parent = {}
        metadata = parent.get("metadata") or {}
        cell_id = getattr(info, "cell_id", None) or metadata.get("cellId")
        owner = {
            "kernel_id": self.host.kernel_id,
            "client_session": (parent.get("header") or {}).get("session"),
            "cell_id": cell_id,
            "parent": parent or None,
        }
        _OWNER.set(owner)
        self.host.last_owner = owner
        deleted = metadata.get("deletedCells")
        if isinstance(deleted, list) and deleted:
            cells = [c for c in deleted if isinstance(c, str)]
            self.registry.cancel_where(Reason.CELL_DELETED, cell_id=cells)
        if cell_id and self.cancel_on_rerun:
            # The new run starts only once the old run's work is gone (bounded wait).
            self.registry.cancel_where(Reason.CELL_RERUN, cell_id=cell_id)

    def _interrupt(self) -> None:
        """Every trigger of an interrupt lands here: SIGTERM goes out now (before IPython
        spends the GIL on a KeyboardInterrupt traceback); waiting and escalation run on a worker."""
        if self.cancel_on_interrupt:
            self.registry.cancel_all(Reason.KERNEL_INTERRUPT, wait=False)

    def _busy_sigint(self, signum: int, frame: Any) -> None:
        self._interrupt()
        raise KeyboardInterrupt

    def _idle_sigint(self, signum: int, frame: Any) -> None:
        self._interrupt()

    def pre_handler_hook(self) -> None:
        self.kernel.saved_sigint_handler = signal.signal(signal.SIGINT, self._busy_sigint)

    def post_handler_hook(self) -> None:
        signal.signal(signal.SIGINT, self._idle_sigint)

    async def interrupt_request(self, stream: Any, ident: Any, parent: Any) -> None:
        # Cancel from the control thread too: a cell stuck in C code handles SIGINT late.
        self._interrupt()
        await self._saved["interrupt_request"](stream, ident, parent)

    def control_request(self, stream: Any, ident: Any, parent: Any) -> None:
        content = control.handle(self.registry, parent.get("content"))
        self.kernel.session.send(stream, control.REPLY, content, parent, ident=ident)

    def _frontend_announced(self, comm: Any, msg: Any) -> None:
        self.host.rich = True

    def publish_events(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        """Every operation change goes out on iopub, in order, one message per batch (iopub
        drops messages past its high-water mark): the server keeps its view from these."""
        for event, data in batch:
            self.host.changed(event, data)
        kernel = self.kernel
        events = [{"event": event, "operation": data} for event, data in batch]
        try:
            kernel.session.send(kernel.iopub_socket, control.EVENT, {"events": events}, parent={})
        except Exception:
            log.debug("could not publish %d events", len(events), exc_info=True)

    def system(self, cmd: str) -> None:
        """``!cmd``: the same live output as IPython's, now a cancellable operation."""
        if cmd.rstrip().endswith("&"):
            raise OSError("Background processes not supported.")  # as IPython says
        expanded = self.shell.var_expand(cmd, depth=1)
        op = api.run(expanded, shell=True, name=f"!{expanded}"[:200])
        self.shell.user_ns["_exit_code"] = op.returncode
        if getattr(self.shell, "system_raise_on_error", False) and op.returncode != 0:
            from subprocess import CalledProcessError

            raise CalledProcessError(op.returncode or 1, cmd)


_installed: KernelIntegration | None = None


def load(shell: Any) -> None:
    global _installed
    if _installed is not None:
        return
    integration = KernelIntegration(shell)
    integration.install()
    _installed = integration
    log.info("jupyter_cancel loaded (kernel %s)", integration.host.kernel_id)


def configure(
    *,
    grace: float | None = None,
    default_policy: str | None = None,
    cancel_on_rerun: bool | None = None,
    cancel_on_interrupt: bool | None = None,
    llm_timeout: float | None = None,
) -> None:
    """Settings the server passes to kernels it starts (its ``c.JupyterCancel.*`` config)."""
    import os

    from ..core.model import to_grace
    from ..llm.config import ENV

    registry = api.registry()
    if grace is not None:
        registry.grace = to_grace(grace)
    if default_policy is not None:
        api.set_default_policy(default_policy)
    if llm_timeout is not None:
        os.environ[ENV] = str(float(llm_timeout))
    if _installed is not None:
        if cancel_on_rerun is not None:
            _installed.cancel_on_rerun = bool(cancel_on_rerun)
        if cancel_on_interrupt is not None:
            _installed.cancel_on_interrupt = bool(cancel_on_interrupt)


def unload(shell: Any) -> None:
    global _installed
    if _installed is not None:
        _installed.uninstall()
        _installed = None
