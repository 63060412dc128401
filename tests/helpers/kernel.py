"""Drive a real python3 kernel as JupyterLab does: execute_requests with metadata.cellId and a
header.session, control-channel requests, interrupts, shutdown."""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from jupyter_client import KernelManager
from jupyter_core.paths import jupyter_runtime_dir

from tests.helpers.wait import until
from tests.helpers.wait import wait_gone as wait_gone  # the kernel tests' import


@dataclass
class Result:
    msg_id: str
    stdout: str = ""
    errors: list[dict[str, Any]] = field(default_factory=list)
    displays: list[dict[str, Any]] = field(default_factory=list)
    reply: dict[str, Any] | None = None
    idle: bool = False

    @property
    def ok(self) -> bool:
        return self.reply is not None and self.reply.get("status") == "ok"


class Kernel:
    def __init__(
        self,
        *,
        load_ext: bool = True,
        interrupt_mode: str | None = None,
        extra_env=None,
        installed_only: bool = False,
    ) -> None:
        """``load_ext``: ``%load_ext`` at start (False: a stock kernel, not even the
        environment-wide autoload); ``installed_only``: nothing of ours but what the
        installation loads by itself (as VS Code's or papermill's kernels get it)."""
        kid = str(uuid.uuid4())
        self.km = KernelManager(kernel_name="python3")
        runtime = jupyter_runtime_dir()
        os.makedirs(runtime, exist_ok=True)
        self.km.connection_file = os.path.join(runtime, f"kernel-{kid}.json")  # as jupyter_server names it
        self.kernel_id = kid
        if interrupt_mode:
            self.km.kernel_spec.interrupt_mode = interrupt_mode
        env = dict(os.environ, **(extra_env or {}))
        if installed_only:
            load_ext = False
        elif not load_ext:  # a stock kernel: not even the environment-wide autoload
            env["JUPYTER_CANCEL_KERNEL_EXTENSION"] = "0"
        self.km.start_kernel(env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.session = str(uuid.uuid4())
        self.pending: dict[str, Result] = {}
        #: iopub messages with no parent request of ours (the extension's events), in order.
        self.unparented: list[dict[str, Any]] = []
        if load_ext:
            r = self.execute("%load_ext jupyter_cancel\nimport jupyter_cancel as jc", cell="setup")
            assert r.ok, r

    @property
    def pid(self) -> int:
        return self.km.provisioner.process.pid

    def send(
        self, code: str, *, cell: str = "cell-1", session: str | None = None, deleted=None, stop_on_error=True
    ) -> str:
        metadata: dict[str, Any] = {"cellId": cell}
        if deleted:
            metadata["deletedCells"] = deleted
        msg = self.kc.session.msg(
            "execute_request",
            {
                "code": code,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": stop_on_error,
            },
            metadata=metadata,
        )
        msg["header"]["session"] = session or self.session
        self.kc.shell_channel.send(msg)
        msg_id = msg["header"]["msg_id"]
        self.pending[msg_id] = Result(msg_id)
        return msg_id

    def collect(self, msg_id: str, timeout: float = 60) -> Result:
        """Read iopub until that request is idle, then its execute_reply."""
        result = self.pending[msg_id]
        deadline = time.monotonic() + timeout
        while not result.idle:
            self._take(self.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic())))
        while result.reply is None:
            reply = self.kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            rid = reply["parent_header"].get("msg_id")
            if rid in self.pending:
                self.pending[rid].reply = reply["content"]
        return result

    def _take(self, m: dict[str, Any]) -> None:
        """File one iopub message under its request (or as parentless)."""
        pid = m["parent_header"].get("msg_id")
        if pid not in self.pending:
            if not pid:
                self.unparented.append(m)
            return
        r = self.pending[pid]
        t, c = m["msg_type"], m["content"]
        if t == "stream":
            r.stdout += c["text"]
        elif t == "error":
            r.errors.append(c)
        elif t in ("display_data", "execute_result", "update_display_data"):
            r.displays.append(c)
        elif t == "status" and c["execution_state"] == "idle":
            r.idle = True

    def unparented_event(self, key: str, timeout: float = 30) -> dict[str, Any]:
        """The content of the first parentless iopub message (the extension's events) that
        has ``key``, reading iopub until it comes: messages from different kernel threads are
        not ordered with each other, so it may come after the cell's own."""
        deadline = time.monotonic() + timeout
        while True:
            for m in self.unparented:
                if key in m["content"]:
                    return m["content"]
            self._take(self.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic())))

    def execute(self, code: str, **kw: Any) -> Result:
        timeout = kw.pop("timeout", 60)
        return self.collect(self.send(code, **kw), timeout=timeout)

    def value(self, expr: str, **kw: Any) -> Any:
        r = self.execute(f"print(repr({expr}))", **kw)
        assert r.ok, r
        return eval(r.stdout.strip().splitlines()[-1])

    def control(self, content: Any, timeout: float = 10) -> dict[str, Any]:
        return self.control_reply(self.control_send(content), timeout)

    def control_send(self, content: Any) -> dict[str, Any]:
        """Send a ``jupyter_cancel_request``; its reply is ``control_reply(msg)``."""
        msg = self.kc.session.msg("jupyter_cancel_request", content)
        self.kc.control_channel.send(msg)
        return msg

    def control_reply(self, msg: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            reply = self.kc.control_channel.get_msg(timeout=max(0.1, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
                assert reply["msg_type"] == "jupyter_cancel_reply"
                return reply["content"]

    def live_pids(self) -> list[int]:
        ops = self.control({"action": "list"})["operations"]
        return [p for op in ops if op["state"] == "running" for p in op["pids"]]

    def wait_for_ops(self, n: int, timeout: float = 20) -> list[dict[str, Any]]:
        """The running operations once ``n`` run with their processes up (control requests)."""

        def running() -> list[dict[str, Any]] | None:
            ops = [o for o in self.control({"action": "list"})["operations"] if o["state"] == "running"]
            return ops if len(ops) >= n and all(o["pids"] for o in ops if o["kind"] == "process") else None

        return until(running, timeout, f"{n} operations running")

    def close(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            if self.km.has_kernel:
                self.km.shutdown_kernel(now=False)
