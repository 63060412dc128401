"""Talk to a test server as JupyterLab does: REST, kernel websockets with a session_id,
execute_requests carrying metadata.cellId."""

from __future__ import annotations

import asyncio
import datetime
import json
import time
import uuid
from pathlib import Path
from typing import Any

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.multikernelmanager import AsyncMultiKernelManager

from tests.helpers.procs import TREE, announced_at_least
from tests.helpers.procs import left_alive as left_alive
from tests.helpers.wait import until, until_file_async, wait_gone_async


async def wait_ready(path: Path, count: int, timeout: float = 20.0) -> list[int]:
    """``procs.wait_ready`` for a test that shares its loop with the server."""
    return await until_file_async(
        path, lambda: announced_at_least(path, count), timeout, f"{path}: {count} announced"
    )


async def wait_gone(pids: list[int], timeout: float = 5.0) -> list[int]:
    """The pids still running after waiting up to ``timeout`` for them to exit."""
    return await wait_gone_async(pids, timeout)


def execute_request(code: str, cell: str, session: str) -> dict[str, Any]:
    """An execute_request as JupyterLab sends it over the kernel websocket (JSON protocol)."""
    return {
        "header": {
            "msg_id": str(uuid.uuid4()),
            "msg_type": "execute_request",
            "session": session,
            "username": "test",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {"cellId": cell},
        "content": {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        "channel": "shell",
        "buffers": [],
    }


def wait_until_up(http: Any, proc: Any, timeout: float, what: str = "server") -> None:
    """Block until a Jupyter server answers /api/status (raises if it died or took too long)."""
    import httpx

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            return http.get("/api/status").status_code == 200
        except httpx.TransportError:
            return False

    try:
        until(up, timeout, what)
    except TimeoutError:
        raise RuntimeError(f"{what} did not start") from None


class Client:
    """One browser connection to one kernel: a websocket with its session_id."""

    def __init__(self, ws: Any, session: str) -> None:
        self.ws = ws
        self.session = session

    def send(self, code: str, cell: str) -> str:
        msg = execute_request(code, cell, self.session)
        self.ws.write_message(json.dumps(msg))
        return msg["header"]["msg_id"]

    async def execute(self, code: str, cell: str = "cell-1", timeout: float = 30) -> dict[str, Any]:
        return await self.collect(self.send(code, cell), timeout)

    async def _next(self, timeout: float) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.read_message(), timeout)
        if raw is None:
            raise ConnectionError("websocket closed")
        return json.loads(raw)

    async def collect(self, msg_id: str, timeout: float = 30) -> dict[str, Any]:
        """The output, errors and reply of a request sent with ``send``."""
        out: dict[str, Any] = {"stdout": "", "errors": []}
        seen: list[str] = []  # what did arrive, for the failure's message
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = await self._next(max(0.1, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise asyncio.TimeoutError(
                    f"no reply and idle to {msg_id} in {timeout} s; got {seen[-20:]}{self._stuck()}"
                ) from None
            mine = (msg.get("parent_header") or {}).get("msg_id") == msg_id
            state = (msg.get("content") or {}).get("execution_state", "")
            seen.append(f"{msg.get('msg_type')}{':' + state if state else ''}{'' if mine else '(other)'}")
            if not mine:
                continue
            t, c = msg["msg_type"], msg["content"]
            if t == "stream":
                out["stdout"] += c["text"]
            elif t == "error":
                out["errors"].append(c)
            elif t == "execute_reply":
                out["reply"] = c
            elif t == "status" and c["execution_state"] == "idle":
                out["idle"] = True
            if "reply" in out and out.get("idle"):
                return out  # iopub and shell are not ordered: wait for both

    def _stuck(self) -> str:
        return ""

    def close(self) -> None:
        self.ws.close()


class DirectClient(Client):
    """One connection to a kernel over its own ZMQ sockets, as nbclient and papermill connect:
    the same requests (``metadata.cellId``) without the server's kernel websocket.

    For the deprecated synchronous ``MappingKernelManager``: jupyter_client runs its methods
    through jupyter_core's ``run_sync``, which, with the server's loop running, runs them on a
    thread of its own ("MainThread - runner"); each kernel's ``loop`` is first read there, so
    every stream the server opens on that kernel, the websocket's included, delivers on that
    thread, and stock jupyter_server writes the browser's websocket from it while the server's
    loop also drives that socket (tornado's ``IOStream`` is not thread-safe: its write-buffer
    assertion, a lost reply). A test of ours over that websocket fails by stock's race, not
    ours; ``test_managers`` checks the stock fact, so this goes when upstream fixes it.
    """

    def __init__(self, kc: Any) -> None:
        super().__init__(None, kc.session.session)
        self.kc = kc
        self._waiting: dict[Any, asyncio.Task[Any]] = {}

    async def nudge(self, timeout: float = 60) -> None:
        """Until the kernel's iopub reaches us, as jupyter_server's websocket nudges: a request
        the kernel handles before our subscription is live loses its iopub half (ZMQ's slow
        joiner: its output, its status ``idle``), and ``collect`` would wait for it in vain."""
        deadline = time.monotonic() + timeout
        while True:
            sent = self._send(self.kc.session.msg("kernel_info_request"))
            try:
                while True:
                    msg = await self._next(0.5)
                    if msg["msg_type"] == "status" and (msg.get("parent_header") or {}).get("msg_id") == sent:
                        return
            except asyncio.TimeoutError:
                if time.monotonic() > deadline:
                    raise

    def _stuck(self) -> str:
        import zmq

        waiting = bool(self.kc.shell_channel.socket.get(zmq.EVENTS) & zmq.POLLIN)
        return "; replies are waiting unread in the shell socket" if waiting else ""

    def send(self, code: str, cell: str) -> str:
        msg = execute_request(code, cell, self.session)
        return self._send(self.kc.session.msg("execute_request", msg["content"], metadata=msg["metadata"]))

    def _send(self, msg: dict[str, Any]) -> str:
        """Send on the shell socket through pyzmq's asyncio socket, never jupyter_client's
        ``Session.send`` (a synchronous shadow of it): a send consumes the socket's
        edge-triggered wake-up, and only the asyncio socket then re-checks for the receive that
        ``_next`` keeps pending; through the shadow a reply that came in meanwhile, and every
        one after it, sat unread (a first cell timing out under the sync manager, 1 run in 3)."""
        sent = self.kc.shell_channel.socket.send_multipart(self.kc.session.serialize(msg))
        if sent.done():
            sent.result()  # raises what the send raised
        return str(msg["header"]["msg_id"])

    async def _recv(self, channel: Any) -> dict[str, Any]:
        """One message of ``channel``, read with a pending ``recv`` (after an immediate send
        pyzmq re-checks for pending receives, not for a pending ``poll`` as ``get_msg`` uses)."""
        _, frames = self.kc.session.feed_identities(await channel.socket.recv_multipart())
        return self.kc.session.deserialize(frames)

    async def _next(self, timeout: float) -> dict[str, Any]:
        for channel in (self.kc.iopub_channel, self.kc.shell_channel):
            if channel not in self._waiting:
                self._waiting[channel] = asyncio.ensure_future(self._recv(channel))
        done, _ = await asyncio.wait(
            self._waiting.values(), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            raise asyncio.TimeoutError
        channel = next(c for c, task in self._waiting.items() if task in done)
        return self._waiting.pop(channel).result()

    def close(self) -> None:
        for task in self._waiting.values():
            task.cancel()
        self.kc.stop_channels()


class ServerHarness:
    def __init__(self, app: Any, fetch: Any, ws_fetch: Any, tmp: Path) -> None:
        self.app = app
        self.fetch = fetch
        self.ws_fetch = ws_fetch
        self.tmp = tmp
        self.clients: list[Client] = []
        self.n = 0

    async def api(self, method: str, *parts: str, body: Any = None, **kw: Any) -> Any:
        if body is not None and not isinstance(body, (str, bytes)):
            body = json.dumps(body)
        if method == "POST" and body is None:
            body = "{}"
        r = await self.fetch(*parts, method=method, body=body, **kw)
        return json.loads(r.body) if r.body else None

    async def start_kernel(self) -> str:
        return (await self.api("POST", "api", "kernels", body={"name": "python3"}))["id"]

    async def connect(self, kernel_id: str, session: str | None = None) -> Client:
        """A client of the kernel as the browser has one (a websocket with a session_id);
        under the synchronous kernel manager, over the kernel's own sockets (``DirectClient``)."""
        if not isinstance(self.app.kernel_manager, AsyncMultiKernelManager):
            direct = self._direct(kernel_id)
            await direct.nudge()
            return direct
        session = session or str(uuid.uuid4())
        ws = await self.ws_fetch("api", "kernels", kernel_id, "channels", params={"session_id": session})
        client = Client(ws, session)
        self.clients.append(client)
        return client

    def _direct(self, kernel_id: str) -> Client:
        kc = AsyncKernelClient()
        kc.load_connection_info(self.app.kernel_manager.get_kernel(kernel_id).get_connection_info())
        kc.start_channels()
        client = DirectClient(kc)
        self.clients.append(client)
        return client

    async def start_tree(
        self, client: Client, cell: str = "cell-1", mode: str = "three", count: int = 3, opts: str = ""
    ) -> list[int]:
        self.n += 1
        ready = self.tmp / f"ready-{self.n}"
        r = await client.execute(
            f"import jupyter_cancel as jc, sys\n"
            f"op = jc.start([sys.executable, {TREE!r}, {mode!r}, {str(ready)!r}], display=False{opts})\n"
            f"print(op.id)",
            cell=cell,
        )
        assert r["reply"]["status"] == "ok", r
        return await wait_ready(ready, count)

    async def close(self) -> None:
        for c in self.clients:
            c.close()
        km = self.app.kernel_manager
        for kid in list(km.list_kernel_ids()):
            try:
                await km.shutdown_kernel(kid)
            except Exception:  # gone meanwhile (a pending kernel's shutdown finishes after DELETE)
                if kid in km.list_kernel_ids():
                    raise
