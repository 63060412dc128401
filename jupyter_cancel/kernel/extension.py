"""``%load_ext jupyter_cancel``: the triggers a kernel sees, wired to the registry.

* before each cell runs: owner tags captured; the cell's earlier work cancelled
  (``cell_rerun``) and waited for; work of ``metadata.deletedCells`` cancelled;
* SIGINT (busy or idle) and the control ``interrupt_request``: every operation but
  ``detach`` cancelled (``kernel_interrupt``), background work included;
* ``shutdown_request`` (restart or not) and interpreter exit: ``kernel_restart`` /
  ``kernel_shutdown``; kernel death: the watchdog;
* ``jupyter_cancel_request`` on the control channel; its ``stop_cell`` action stops one
  running cell's Python too (``cellstop``), without the kernel-wide interrupt;
* ``!cmd`` shell escapes run as operations.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
from typing import Any

from .. import protocol
from ..core import api
from ..core.capture import OwnedCapture
from ..core.errors import Cancelled
from ..core.model import Reason, describe
from ..core.operation import Operation
from ..core.registry import Registry
from ..core.selector import Selector
from . import control, spark
from .adapter import KernelAdapter
from .cellstop import CellStopper
from .host import KernelHost, kernel_id_of, owned_by, set_owner, tag_thread
from .tracebacks import HiddenFrames

log = logging.getLogger(__name__)
#: Skipped requests remembered at most (one that never comes must not be kept forever).
SKIP_MAX = 256


class KernelIntegration:
    """Everything ``load`` installs, so that ``unload`` can take it all back."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.kernel = getattr(shell, "kernel", None)
        self.adapter = KernelAdapter(self.kernel) if self.kernel is not None else None
        self.registry: Registry = api.registry()
        self.host = KernelHost(self.kernel, kernel_id_of(self.kernel) if self.kernel else None)
        self._saved: dict[str, Any] = {}
        #: Set by the server (JupyterCancel.cancel_on_rerun / cancel_on_interrupt) via ``configure``.
        self.cancel_on_rerun = True
        self.cancel_on_interrupt = True
        #: Every process the kernel starts, by any route: an operation of the cell starting it.
        self.capture = OwnedCapture(self.registry, self.host.owner, api.current_policy)
        self.stopper = CellStopper(self.publish_stuck)
        #: Our SIGINT handler's frame never ends the user's traceback; a library error that a
        #: stop caused (py4j's, around our ``Cancelled`` or a cancelled Spark job) reads as the stop.
        self.hidden = HiddenFrames(
            shell, frozenset({KernelIntegration._busy_sigint.__code__}), stopped=self._spark_stopped
        )
        #: The running cell's Spark jobs (``kernel/spark.py``), while a Spark session is live.
        self.spark_op: Operation | None = None
        #: What a stop or interrupt that landed inside a py4j call will read as (see _busy_sigint).
        self._spark_deferred: BaseException | None = None
        #: Queued execute requests stopped before they started: msg_id → reason.
        self._skip: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._skip_lock = threading.Lock()

    # -- install / uninstall -------------------------------------------------------
    def install(self) -> None:
        api.set_host(self.host)
        self.shell.events.register("pre_run_cell", self.pre_run_cell)
        self.shell.events.register("post_run_cell", self.post_run_cell)
        self.stopper.sockets.install()
        self._patch_thread_start()
        self._saved["system"] = self.shell.__dict__.get("system")
        self.shell.system = self.system
        if self.adapter is not None:
            self._install_kernel_hooks(self.adapter)
            self.hidden.install()
            self._saved["unsubscribe"] = self.registry.subscribe_batch(self.publish_events)
            if not self.adapter.register_comm_target("jupyter_cancel", self._frontend_announced):
                log.debug("no comm manager: plain output only")
        self.shell.input_transformers_cleanup.insert(0, self._skip_transform)
        self.capture.install()
        self._patch_pools()
        self.shell.display_formatter.ipython_display_formatter.for_type(
            Operation, self.host.display_operation
        )
        # Started now, not waited for: registrations queue in its pipe (or socket) until it reads
        # them, and a kernel that dies first still closes its end, so the first cell's work is
        # covered either way. Under a server it is the server's shared watchdog: a connect.
        self.registry.start_watchdog()

    def uninstall(self) -> None:
        self.shell.display_formatter.ipython_display_formatter.pop(Operation, None)
        self.capture.uninstall()
        if self._skip_transform in self.shell.input_transformers_cleanup:
            self.shell.input_transformers_cleanup.remove(self._skip_transform)
        for cls, original in self._saved.pop("pools", []):
            cls._spawn_process = original
            cls.__init__ = self._saved.pop("pool_init")
        self.shell.events.unregister("pre_run_cell", self.pre_run_cell)
        self.shell.events.unregister("post_run_cell", self.post_run_cell)
        self.stopper.sockets.uninstall()
        threading.Thread.start = self._saved.pop("thread_start")  # type: ignore[method-assign]
        if self._saved.get("system") is None:
            self.shell.__dict__.pop("system", None)
        else:
            self.shell.system = self._saved["system"]
        if self.adapter is not None:
            self.hidden.uninstall()
            self._saved.pop("unsubscribe")()
            self.adapter.unregister_comm_target("jupyter_cancel", self._frontend_announced)
            self.adapter.remove_control_handler(protocol.REQUEST)
            self.adapter.restore()
        api.set_host(None)

    def _patch_pools(self) -> None:
        """A ``ProcessPoolExecutor`` belongs to the cell that created it, though its workers
        start at the first ``submit`` (maybe from a later cell): re-running that later cell
        must not kill the pool."""
        from concurrent.futures import ProcessPoolExecutor

        original_init = ProcessPoolExecutor.__init__
        original_spawn = ProcessPoolExecutor._spawn_process
        host = self.host

        def __init__(pool: Any, *args: Any, **kwargs: Any) -> None:
            pool.jupyter_cancel_owner = host.owner()
            original_init(pool, *args, **kwargs)

        def _spawn_process(pool: Any) -> None:
            with owned_by(getattr(pool, "jupyter_cancel_owner", None) or host.owner()):
                original_spawn(pool)

        ProcessPoolExecutor.__init__ = __init__  # type: ignore[method-assign]
        ProcessPoolExecutor._spawn_process = _spawn_process  # type: ignore[attr-defined]
        self._saved["pools"] = [(ProcessPoolExecutor, original_spawn)]
        self._saved["pool_init"] = original_init

    def _patch_thread_start(self) -> None:
        original = threading.Thread.start
        self._saved["thread_start"] = original

        def start(thread: threading.Thread) -> None:
            tag_thread(thread)
            original(thread)

        threading.Thread.start = start  # type: ignore[method-assign]

    def _install_kernel_hooks(self, adapter: KernelAdapter) -> None:
        adapter.add_control_handler(protocol.REQUEST, self.control_request)
        adapter.wrap_interrupt_request(self.interrupt_request)
        adapter.handle_sigint(busy=self._busy_sigint, idle=self._idle_sigint)
        adapter.before_shutdown(
            lambda restart: self.registry.close(Reason.KERNEL_RESTART if restart else Reason.KERNEL_SHUTDOWN)
        )

    # -- triggers ------------------------------------------------------------------
    def pre_run_cell(self, info: Any) -> None:
        parent = self.adapter.shell_parent() if self.adapter is not None else {}
        metadata = parent.get("metadata") or {}
        cell_id = getattr(info, "cell_id", None) or metadata.get("cellId")
        run = self.stopper.next_run()
        owner = {
            "kernel_id": self.host.kernel_id,
            "client_session": (parent.get("header") or {}).get("session"),
            "cell_id": cell_id,
            "parent": parent or None,
            "run": run,
        }
        set_owner(owner)
        self.stopper.started(run, cell_id)
        self.host.last_owner = owner
        deleted = metadata.get("deletedCells")
        if isinstance(deleted, list) and deleted:
            cells = [c for c in deleted if isinstance(c, str)]
            self.registry.cancel_where(Selector(cell_id=tuple(cells)), Reason.CELL_DELETED)
        if cell_id and self.cancel_on_rerun:
            # The new run starts only once the old run's work is gone (bounded wait).
            self.registry.cancel_where(Selector(cell_id=cell_id), Reason.CELL_RERUN)
        if "pyspark" in sys.modules:  # (nothing of Spark is imported here unless the user did)
            self.hidden.also(spark.library_errors())
            self.spark_op = spark.begin_run(self.registry, owner, api.current_policy())

    def post_run_cell(self, result: Any) -> None:
        self.stopper.ended()
        if self._skip:
            with self._skip_lock:
                self._skip.pop(self._running_msg_id() or "", None)
        spark.end_run(self.spark_op)
        self.spark_op = None
        self._spark_deferred = None

    def _spark_stopped(self) -> BaseException | None:
        op = self.spark_op
        if op is None or not op.cancel_requested:
            return None
        return self._spark_deferred or Cancelled(
            None, op.reason or "cancelled", name="this cell's Spark jobs"
        )

    def publish_stuck(self, info: dict[str, Any]) -> None:
        """A stopped cell still runs after the bound (C code, or it caught ``Cancelled``)."""
        if self.adapter is not None:
            self.adapter.publish(
                protocol.EVENT, {"events": [], "cell_stuck": {"kernel_id": self.host.kernel_id, **info}}
            )

    def _interrupt(self) -> None:
        """Every trigger of an interrupt lands here: SIGTERM goes out now (before IPython
        spends the GIL on a KeyboardInterrupt traceback); waiting and escalation run on a worker."""
        if self.cancel_on_interrupt:
            self.registry.cancel_all(Reason.KERNEL_INTERRUPT, wait=False)

    def _busy_sigint(self, signum: int, frame: Any) -> None:
        stop = self.stopper.claim()
        if stop == "":
            return  # a cell stop that came too late
        if self._spark_deferred is None and self.spark_op is not None and spark.inside_py4j(frame):
            # The cell waits for the JVM inside a py4j call: an exception raised here would leave
            # the JVM's answer unread on the thread's connection (the next call would read it as
            # its own, after waiting for the job). Its Spark jobs are cancelled instead, the JVM
            # answers at once, and the error that answer raises reads as this stop or interrupt.
            # (Another SIGINT — the stop's repeat, a second interrupt — raises as usual.)
            if stop is None:
                self._interrupt()
            self._spark_deferred = Cancelled(None, stop, name="this cell") if stop else KeyboardInterrupt()
            return
        if stop:
            raise Cancelled(None, stop, name="this cell") from None
        if stop is None:  # a real interrupt ("" is a cell stop that came too late)
            self._interrupt()
            raise KeyboardInterrupt

    def _idle_sigint(self, signum: int, frame: Any) -> None:
        if self.stopper.claim() is None:
            self._interrupt()

    async def interrupt_request(self, original: Any, stream: Any, ident: Any, parent: Any) -> None:
        # Cancel from the control thread too: a cell stuck in C code handles SIGINT late.
        self._interrupt()
        await original(stream, ident, parent)

    def control_request(self, stream: Any, ident: Any, parent: Any) -> None:
        content = control.handle(
            self.registry, parent.get("content"), stop_cell=self.stopper.stop, skip=self.skip_queued
        )
        assert self.adapter is not None
        self.adapter.reply(stream, protocol.REPLY, content, parent, ident)

    def skip_queued(self, msg_id: str, reason: str) -> None:
        """A queued execute request (Run All) stopped before it started: when the kernel
        reaches it, it runs no code, says so in one line, and its neighbours run as queued."""
        with self._skip_lock:
            self._skip[msg_id] = reason
            while len(self._skip) > SKIP_MAX:  # requests that never came (an aborted queue)
                self._skip.popitem(last=False)

    def _running_msg_id(self) -> str | None:
        parent = self.adapter.shell_parent() if self.adapter is not None else {}
        return (parent.get("header") or {}).get("msg_id")

    def _skip_transform(self, lines: list[str]) -> list[str]:
        """IPython's first input transformer: a skipped request's code is replaced by the note
        (ipykernel may transform a cell twice: the entry goes at the run's end)."""
        if not self._skip:
            return lines
        reason = self._skip.get(self._running_msg_id() or "")
        if reason is None:
            return lines
        note = f"Stopped before it ran — {describe(reason)}"
        return [f"print({note!r})\n"]

    def _frontend_announced(self, comm: Any, msg: Any) -> None:
        self.host.rich = True

    def publish_events(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        """Every operation change goes out on iopub, in order, one message per batch (iopub
        drops messages past its high-water mark): the server keeps its view from these."""
        for event, data in batch:
            self.host.changed(event, data)
        events = [{"event": event, "operation": data} for event, data in batch]
        try:
            assert self.adapter is not None
            self.adapter.publish(protocol.EVENT, {"events": events})
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
    shell.register_magic_function(capture_magic, "line", "jc_capture")
    log.info("jupyter_cancel loaded (kernel %s)", integration.host.kernel_id)


def configure(
    *,
    grace: float | None = None,
    default_policy: str | None = None,
    cancel_on_rerun: bool | None = None,
    cancel_on_interrupt: bool | None = None,
    llm_timeout: float | None = None,
    capture_subprocesses: bool | None = None,
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
        if capture_subprocesses is not None:
            _installed.capture.enabled = bool(capture_subprocesses)


def capture_magic(line: str) -> None:
    """``%jc_capture on|off``: capture of every process this kernel starts (default on)."""
    word = line.strip().lower()
    if _installed is None:
        print("jupyter_cancel is not loaded (%load_ext jupyter_cancel)")
        return
    if word in ("on", "off"):
        _installed.capture.enabled = word == "on"
    print(f"jupyter_cancel capture is {'on' if _installed.capture.enabled else 'off'}")


def unload(shell: Any) -> None:
    global _installed
    if _installed is not None:
        _installed.uninstall()
        _installed = None
