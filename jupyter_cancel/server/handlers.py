"""REST + event stream, authenticated like every Jupyter API (XSRF on POST)."""

from __future__ import annotations

import json
from typing import Any

from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web
from tornado.websocket import WebSocketHandler

from ..core.model import CancelReason, Reason, short, to_reason, to_text
from ..core.selector import Selector
from .events import public_view

AUTH_RESOURCE = "kernels"
_OPTIONAL_STR = ("cell_id", "client_session", "kernel_id")
#: Request bodies are a few fields; anything larger is refused before it is parsed.
MAX_BODY = 64 * 1024


def _body(handler: APIHandler, allowed: set[str]) -> dict[str, Any]:
    """The JSON body as an object with only ``allowed`` keys; 400 with a short message otherwise.

    Messages never quote the input unbounded (they end up in the response and the log)."""
    raw = handler.request.body or b"{}"
    if len(raw) > MAX_BODY:
        raise web.HTTPError(400, f"body too large: {len(raw)} bytes (at most {MAX_BODY})")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as err:  # RecursionError: deeply nested arrays
        raise web.HTTPError(400, f"body is not JSON: {short(str(err))}") from None
    if not isinstance(body, dict):
        raise web.HTTPError(400, "body must be a JSON object")
    unknown = set(body) - allowed
    if unknown:
        raise web.HTTPError(400, f"unknown fields: {short(sorted(unknown))}")
    try:
        # A person's words: the cancel's message, its source always ``user`` (free text
        # never borrows a trigger's policy rules, whatever it says).
        body["reason"] = CancelReason.user(to_reason(body.get("reason", Reason.USER)))
        for key in _OPTIONAL_STR:
            if body.get(key) is not None:
                body[key] = to_text(body[key], key)
    except ValueError as err:
        raise web.HTTPError(400, str(err)) from None
    return body


def _not_found(what: str, value: str) -> web.HTTPError:
    return web.HTTPError(404, f"no such {what}: {short(value)}")


class _Base(ExtensionHandlerMixin, APIHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def tracker(self) -> Any:
        return self.settings["jupyter_cancel_tracker"]

    def kernel_filter(self) -> str | None:
        """The optional ``?kernel_id=`` of a listing; 404 if it names no kernel."""
        kernel_id = self.get_argument("kernel_id", None)
        if kernel_id is not None and kernel_id not in self.kernel_manager:
            raise _not_found("kernel", kernel_id)
        return kernel_id


class OperationsHandler(_Base):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        kernel_id = self.kernel_filter()
        await self.tracker.refresh(kernel_id)
        if self.get_argument("resources", "0") not in ("0", ""):
            await self.tracker.resources(kernel_id)
        self.finish(json.dumps({"operations": self.tracker.operations(kernel_id)}))


class ResourcesHandler(_Base):
    """What each running process tree costs now, keyed by operation id (the panel polls it
    while it is open: nothing is sampled while nobody looks)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        kernel_id = self.kernel_filter()
        self.finish(json.dumps({"resources": await self.tracker.resources(kernel_id)}))


class OperationOutputHandler(_Base):
    """The newest output of one operation (the panel's expanded row), asked of its kernel."""

    @web.authenticated
    @authorized
    async def get(self, op_id: str) -> None:
        found = self.tracker.find(op_id)
        if found is None:
            raise _not_found("operation", op_id)
        link, _ = found
        reply = await link.request(
            {"action": "output", "operation_ids": [op_id]}, self.tracker.app.control_timeout
        )
        if reply is None or reply.get("status") != "ok":
            output = ""  # a busy or gone kernel, a kernel without the extension: nothing to show
        else:
            output = str(reply.get("output") or "")
        self.finish(json.dumps({"id": op_id, "output": output}))


class HealthHandler(_Base):
    """Per kernel: is the extension answering, is its death watchdog alive, what is stuck."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.finish(json.dumps({"kernels": await self.tracker.health()}))


class CancelOperationHandler(_Base):
    @web.authenticated
    @authorized
    async def post(self, op_id: str) -> None:
        body = _body(self, {"reason"})
        found = self.tracker.find(op_id)
        if found is None:
            raise _not_found("operation", op_id)
        link, _ = found
        await self.tracker.cancel(link.kernel_id, body["reason"], Selector(operation_ids=(op_id,)))
        data = link.get(op_id) or {}
        self.finish(json.dumps(public_view(data)))


class CancelKernelHandler(_Base):
    @web.authenticated
    @authorized
    async def post(self, kernel_id: str) -> None:
        body = _body(self, {"reason", "cell_id", "client_session"})
        if kernel_id not in self.kernel_manager:
            raise _not_found("kernel", kernel_id)
        selector = Selector(cell_id=body.get("cell_id"), client_session=body.get("client_session"))
        if selector.empty:
            selector = Selector(all=True)  # a body naming no cell and no client: the kernel's work
        cancelled = await self.tracker.cancel(kernel_id, body["reason"], selector)
        self.finish(json.dumps({"cancelled": cancelled}))


class StopCellHandler(_Base):
    """Stop one cell: its operations, and its Python if it is the cell running now."""

    @web.authenticated
    @authorized
    async def post(self, kernel_id: str, cell_id: str) -> None:
        body = _body(self, {"reason"})
        if kernel_id not in self.kernel_manager:
            raise _not_found("kernel", kernel_id)
        try:
            cell_id = to_text(cell_id, "cell id")
        except ValueError as err:
            raise web.HTTPError(400, str(err)) from None
        self.finish(json.dumps(await self.tracker.stop_cell(kernel_id, cell_id, body["reason"])))


class ClientClosedHandler(_Base):
    """The frontend's beacon: a notebook panel or the whole tab closed (no grace)."""

    @web.authenticated
    @authorized
    async def post(self, client_session: str) -> None:
        body = _body(self, {"reason", "kernel_id", "path"})
        client_session, path = _session_and_path(client_session, body)
        kernel_id = body.get("kernel_id")
        if kernel_id is not None and kernel_id not in self.kernel_manager:
            raise _not_found("kernel", kernel_id)
        cancelled = await self.tracker.sessions.tab_closed(client_session, kernel_id, path)
        self.finish(json.dumps({"cancelled": cancelled}))


class ClientOpenedHandler(_Base):
    """A page opened a notebook on a kernel: it takes over the work of the page it replaces
    (a reload), if one went away within ``reload_grace``."""

    @web.authenticated
    @authorized
    async def post(self, client_session: str) -> None:
        body = _body(self, {"kernel_id", "path"})
        client_session, path = _session_and_path(client_session, body)
        kernel_id = body.get("kernel_id")
        if kernel_id is None or path is None:
            raise web.HTTPError(400, "kernel_id and path are required")
        if kernel_id not in self.kernel_manager:
            raise _not_found("kernel", kernel_id)
        replaced = await self.tracker.sessions.reopened(client_session, kernel_id, path)
        self.finish(json.dumps({"replaced": replaced}))


#: Longest notebook path a page may name (paths are longer than other texts we take).
MAX_PATH = 4096


def _session_and_path(client_session: str, body: dict[str, Any]) -> tuple[str, str | None]:
    try:
        session = to_text(client_session, "client session")
        path = body.get("path")
        if path is not None:
            if not isinstance(path, str) or len(path) > MAX_PATH:
                raise ValueError(f"path must be a string of at most {MAX_PATH} characters")
            path.encode("utf-8")
    except UnicodeEncodeError:
        raise web.HTTPError(400, "path is not valid Unicode (a lone surrogate)") from None
    except ValueError as err:
        raise web.HTTPError(400, str(err)) from None
    return session, path


class EventsHandler(WebSocketMixin, WebSocketHandler, JupyterHandler):  # type: ignore[misc]
    """One JSON message per operation change, all kernels; starts with a snapshot."""

    auth_resource = AUTH_RESOURCE

    @property
    def tracker(self) -> Any:
        return self.settings["jupyter_cancel_tracker"]

    def set_default_headers(self) -> None:
        pass  # as the kernels websocket: JupyterHandler's headers do not apply

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        user = self.current_user
        if not self.authorizer.is_authorized(self, user, "read", AUTH_RESOURCE):
            raise web.HTTPError(403)
        await super().get(*args, **kwargs)

    def open(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super().open()
        self.write_message(json.dumps({"event": "snapshot", "operations": self.tracker.operations()}))
        self.tracker.listeners.add(self._send)

    def _send(self, message: dict[str, Any]) -> None:
        self.write_message(json.dumps(message))

    def on_message(self, message: Any) -> None:
        pass  # the stream is one-way

    def on_close(self) -> None:
        self.tracker.listeners.discard(self._send)
