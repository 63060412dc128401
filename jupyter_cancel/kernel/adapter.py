"""The ipykernel internals the kernel extension relies on, in one place.

Checked against ipykernel 7.4.0 and IPython 9.18 (and the 6.29 line's same attributes):
``kernel.control_handlers`` (a dict of msg_type → handler, run on the control thread),
``pre_handler_hook``/``post_handler_hook`` and ``saved_sigint_handler`` (ipykernel swaps
SIGINT around each shell message with them), ``do_shutdown(restart)``, ``get_parent("shell")``,
``session.send`` on ``iopub_socket`` and the control stream, ``comm_manager`` targets.
When ipykernel changes one of these, this module is what changes.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

SigHandler = Callable[[int, Any], Any]


class KernelAdapter:
    """One ipykernel ``Kernel``, patched and unpatched through named operations."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self._saved: dict[str, Any] = {}

    # -- control channel -------------------------------------------------------------
    def add_control_handler(self, msg_type: str, handler: Callable[[Any, Any, Any], Any]) -> None:
        self.kernel.control_handlers[msg_type] = handler

    def remove_control_handler(self, msg_type: str) -> None:
        self.kernel.control_handlers.pop(msg_type, None)

    def wrap_interrupt_request(self, handler: Callable[[Any, Any, Any, Any], Any]) -> None:
        """``handler(original, stream, ident, parent)`` replaces the interrupt_request handler."""
        original = self.kernel.control_handlers.get("interrupt_request")
        self._saved["interrupt_request"] = original

        async def interrupt_request(stream: Any, ident: Any, parent: Any) -> None:
            await handler(original, stream, ident, parent)

        self.kernel.control_handlers["interrupt_request"] = interrupt_request

    def reply(self, stream: Any, msg_type: str, content: dict[str, Any], parent: Any, ident: Any) -> None:
        self.kernel.session.send(stream, msg_type, content, parent, ident=ident)

    def publish(self, msg_type: str, content: dict[str, Any]) -> None:
        """A message on iopub with no parent (not tied to a cell)."""
        self.kernel.session.send(self.kernel.iopub_socket, msg_type, content, parent={})

    # -- SIGINT, busy and idle ---------------------------------------------------------
    def handle_sigint(self, busy: SigHandler, idle: SigHandler) -> None:
        """``busy`` while a shell message runs, ``idle`` between them (ipykernel ignores
        SIGINT while idle: with this an idle interrupt is seen too). Call inside a cell."""

        def pre_handler_hook() -> None:
            self.kernel.saved_sigint_handler = signal.signal(signal.SIGINT, busy)

        def post_handler_hook() -> None:
            signal.signal(signal.SIGINT, idle)

        self.kernel.pre_handler_hook = pre_handler_hook
        self.kernel.post_handler_hook = post_handler_hook
        signal.signal(signal.SIGINT, busy)

    # -- shutdown --------------------------------------------------------------------
    def before_shutdown(self, action: Callable[[bool], None]) -> None:
        """``action(restart)`` runs before ipykernel's own ``do_shutdown``."""
        original = self.kernel.do_shutdown

        def do_shutdown(restart: bool) -> Any:
            action(restart)
            return original(restart)

        self.kernel.do_shutdown = do_shutdown

    # -- the request being served ------------------------------------------------------
    def shell_parent(self) -> dict[str, Any]:
        """The shell message being served (its header and metadata), or {}."""
        try:
            return dict(self.kernel.get_parent("shell") or {})
        except Exception:
            return {}

    # -- comms -----------------------------------------------------------------------
    def register_comm_target(self, name: str, callback: Callable[[Any, Any], None]) -> bool:
        try:
            self.kernel.comm_manager.register_target(name, callback)
            return True
        except Exception:
            return False

    def unregister_comm_target(self, name: str, callback: Callable[[Any, Any], None]) -> None:
        try:
            self.kernel.comm_manager.unregister_target(name, callback)
        except Exception:
            pass

    # -- undo ------------------------------------------------------------------------
    def restore(self) -> None:
        """Take back every patch (``%unload_ext``); called inside a cell."""
        if "interrupt_request" in self._saved:
            self.kernel.control_handlers["interrupt_request"] = self._saved.pop("interrupt_request")
        for name in ("pre_handler_hook", "post_handler_hook", "do_shutdown"):
            self.kernel.__dict__.pop(name, None)
        signal.signal(signal.SIGINT, signal.default_int_handler)
