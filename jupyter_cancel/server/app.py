"""The jupyter_server extension: config, the tracker, handlers, kernel-extension autoload."""

from __future__ import annotations

import functools
import json
import os
import pathlib
import subprocess
import sys
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Float, TraitError, Unicode, validate

from ..core.model import DEFAULT_GRACE, Policy, short
from ..kernel import autoload
from ..llm.config import ENV as LLM_TIMEOUT_ENV
from . import adapter
from .foreign import MODES as FOREIGN_MODES
from .handlers import (
    CancelKernelHandler,
    CancelOperationHandler,
    ClientClosedHandler,
    ClientOpenedHandler,
    EventsHandler,
    HealthHandler,
    OperationOutputHandler,
    OperationsHandler,
    ResourcesHandler,
    StopCellHandler,
)
from .tracker import Tracker

SCHEMA = pathlib.Path(__file__).with_name("schemas") / "operation.yaml"

#: ``jupyter cancel --help-all`` lists every trait (``jupyter server --help-all`` only knows
#: ServerApp's own classes); ``jupyter cancel`` alone starts a server with the extension.


@functools.lru_cache(maxsize=32)
def importable_in(python: str) -> bool:
    """Whether the interpreter ``python`` (a kernelspec's ``argv[0]``) can import jupyter_cancel:
    asked once per interpreter; this server's own interpreter (jupyter_client runs
    ``python``/``python3`` as it) without asking."""
    names = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}
    if python in names or os.path.realpath(python) == os.path.realpath(sys.executable):
        return True
    try:
        probe = subprocess.run(
            [
                python,
                "-c",
                "import importlib.util as u, sys; sys.exit(u.find_spec('jupyter_cancel') is None)",
            ],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


class JupyterCancel(ExtensionApp):
    """Stop work launched from notebooks: tab close, interrupt, restart, shutdown, death."""

    name = "jupyter_cancel"
    load_other_extensions = True

    grace = Float(
        DEFAULT_GRACE, help="Seconds between SIGTERM and SIGKILL when the server ends a tree itself."
    ).tag(config=True)
    tab_close_grace = Float(
        15.0,
        help="Seconds a client (browser tab) may be gone before its work is cancelled; "
        "a reconnect within it (a reload, a network blip) keeps the work.",
    ).tag(config=True)
    reload_grace = Float(
        3.0,
        help="Seconds a page that went away (closed or reloading: a browser cannot tell them "
        "apart as it unloads) leaves its work for a page reopening the same notebook on the same "
        "kernel to take over; none by then: the work is cancelled as a closed tab's. 0: a page "
        "going away cancels at once, a reload too.",
    ).tag(config=True)
    control_timeout = Float(
        1.0, help="Seconds to wait for a kernel to answer a cancel before ending its trees ourselves."
    ).tag(config=True)
    cancel_on_interrupt = Bool(True, help="Cancel a kernel's work when it is interrupted.").tag(config=True)
    cancel_on_rerun = Bool(True, help="Cancel a cell's earlier work when it runs again.").tag(config=True)
    cancel_on_tab_close = Bool(True, help="Cancel a client's work when its tab closes.").tag(config=True)
    cancel_on_restart = Bool(True, help="Cancel a kernel's work before it restarts or shuts down.").tag(
        config=True
    )
    llm_timeout = Float(
        300.0, help="Default timeout in seconds of LLM operations in kernels the server starts (10–3600)."
    ).tag(config=True)
    default_policy = Unicode(
        "cancel", help="Policy of operations that do not name one: cancel, continue, detach."
    ).tag(config=True)
    capture_subprocesses = Bool(
        True,
        help="In kernels the server starts, every child process a cell starts (plain subprocess, "
        "os.system, multiprocessing, libraries) is an operation of that cell. %jc_capture off "
        "turns it off in one kernel.",
    ).tag(config=True)
    load_kernel_extension = Bool(
        True,
        help="Load the kernel extension into every IPython kernel the server starts (False: "
        "not even by the environment-wide autoload). Kernels started without a server (VS Code, "
        "papermill, nbclient, jupyter console) load it too wherever jupyter_cancel is installed: "
        "'jupyter-cancel autoload off' turns that off for an environment, "
        "JUPYTER_CANCEL_KERNEL_EXTENSION=0 in a kernelspec's env for one kernel.",
    ).tag(config=True)
    foreign_kernels = Unicode(
        "cancel",
        help="Kernels without the kernel extension (R, bash, xeus-python, any other language): "
        "'cancel' ends every process such a kernel started (but the kernel and its own helpers) "
        "on restart, shutdown, death, server shutdown, Stop, an interrupt (what escaped the "
        "kernel's process group) and when its last browser tab is gone for tab_close_grace; "
        "'continue' does all that but the closed-tab part; 'off' leaves them as stock Jupyter does.",
    ).tag(config=True)
    shared_watchdog = Bool(
        True,
        help="One death watchdog for all the kernels the server starts (each kernel connects to "
        "it) instead of a process per kernel. A kernel that cannot reach it starts its own.",
    ).tag(config=True)

    @validate("llm_timeout")
    def _check_llm_timeout(self, proposal: dict[str, Any]) -> float:
        value = float(proposal["value"])
        if not 10 <= value <= 3600:
            raise TraitError(f"JupyterCancel.llm_timeout must be between 10 and 3600 seconds, not {value}")
        return value

    @validate("grace", "tab_close_grace", "control_timeout")
    def _check_seconds(self, proposal: dict[str, Any]) -> float:
        value = float(proposal["value"])
        if not 0 <= value <= 3600:
            raise TraitError(
                f"JupyterCancel.{proposal['trait'].name} must be between 0 and 3600 seconds, not {value}"
            )
        return value

    @validate("foreign_kernels")
    def _check_foreign(self, proposal: dict[str, Any]) -> str:
        value = proposal["value"]
        if value not in FOREIGN_MODES:
            raise TraitError(
                f"JupyterCancel.foreign_kernels must be cancel, continue or off, not {short(value)}"
            )
        return str(value)

    @validate("default_policy")
    def _check_policy(self, proposal: dict[str, Any]) -> str:
        try:
            return Policy(proposal["value"]).value
        except ValueError:
            raise TraitError(
                f"JupyterCancel.default_policy must be cancel, continue or detach, not {proposal['value']!r}"
            ) from None

    def _link_jupyter_server_extension(self, serverapp: Any) -> None:
        try:
            super()._link_jupyter_server_extension(serverapp)
        except TraitError as err:
            # jupyter_server only logs extension failures: bad config must stop the server.
            serverapp.log.critical("jupyter_cancel: %s", err)
            raise SystemExit(f"jupyter_cancel: refusing to start: {err}") from err

    def initialize_settings(self) -> None:
        self.tracker = Tracker(self)
        self.settings["jupyter_cancel_tracker"] = self.tracker
        logger = getattr(self.serverapp, "event_logger", None)
        if logger is not None:
            logger.register_event_schema(SCHEMA)
        self.tracker.install()
        self._track_websockets()
        self._start_shared_watchdog()

    def _start_shared_watchdog(self) -> None:
        """Kernels the server starts inherit its environment: they find the watchdog there."""
        import os
        import tempfile

        from ..core.watchdog_client import SOCKET_ENV, start_shared

        self._watchdog: Any = None
        self._watchdog_env = os.environ.get(SOCKET_ENV)
        if not self.shared_watchdog:
            return
        folder = tempfile.mkdtemp(prefix="jupyter_cancel-")  # 0700; short (Unix socket paths are)
        path = os.path.join(folder, "watchdog.sock")
        try:
            self._watchdog = start_shared(path)
        except OSError as err:
            self.log.warning("no shared watchdog (%s): each kernel starts its own", err)
            return
        os.environ[SOCKET_ENV] = path
        self.log.debug("shared watchdog %d at %s", self._watchdog.pid, path)

    def initialize_handlers(self) -> None:
        base = r"/jupyter-cancel/api"
        self.handlers.extend(
            [
                (rf"{base}/operations", OperationsHandler),
                (rf"{base}/operations/(?P<op_id>[^/]+)/cancel", CancelOperationHandler),
                (rf"{base}/kernels/(?P<kernel_id>[^/]+)/cancel", CancelKernelHandler),
                (rf"{base}/kernels/(?P<kernel_id>[^/]+)/cells/(?P<cell_id>[^/]+)/stop", StopCellHandler),
                (rf"{base}/clients/(?P<client_session>[^/]+)/closed", ClientClosedHandler),
                (rf"{base}/clients/(?P<client_session>[^/]+)/opened", ClientOpenedHandler),
                (rf"{base}/operations/(?P<op_id>[^/]+)/output", OperationOutputHandler),
                (rf"{base}/events", EventsHandler),
                (rf"{base}/health", HealthHandler),
                (rf"{base}/resources", ResourcesHandler),
            ]
        )

    def _track_websockets(self) -> None:
        """Count each kernel websocket by its ``session_id`` (the client session)."""
        # self.settings is merged into the web app's settings after initialize_settings.
        adapter.track_kernel_websockets(
            self.settings, self.tracker.sessions.opened, self.tracker.sessions.closed
        )

    def kernel_settings(self) -> dict[str, Any]:
        """The ``c.JupyterCancel.*`` settings a kernel's extension takes (``configure``)."""
        return {
            "grace": self.grace,
            "default_policy": self.default_policy,
            "cancel_on_rerun": self.cancel_on_rerun,
            "cancel_on_interrupt": self.cancel_on_interrupt,
            "llm_timeout": self.llm_timeout,
            "capture_subprocesses": self.capture_subprocesses,
        }

    def kernel_env(self) -> dict[str, str]:
        """What an IPython kernel's environment gets: the settings its extension reads as it loads."""
        if not self.load_kernel_extension:  # (nor by the environment-wide autoload)
            return {autoload.SWITCH_ENV: "0"}
        settings = self.kernel_settings()
        # Read by the LLM helpers when used: the kernel need not import them (httpx) to start.
        llm_timeout = settings.pop("llm_timeout")
        return {autoload.SETTINGS_ENV: json.dumps(settings), LLM_TIMEOUT_ENV: str(float(llm_timeout))}

    def kernel_arguments(self, kernel_name: str | None) -> list[str]:
        """What an IPython kernel's command line gets: the kernel extension, loaded while the
        kernel starts, before it serves any message — no request of ours, so its activity,
        execution state and execution count are as stock. Empty for other kernels, and for
        an interpreter without jupyter_cancel (its kernel is then owned as a foreign one)."""
        argv = self._ipykernel_argv(kernel_name)
        if argv is None or not self.load_kernel_extension or not importable_in(argv[0]):
            return []
        return autoload.ARGUMENTS

    def _ipykernel_argv(self, kernel_name: str | None) -> list[str] | None:
        km = self.serverapp.kernel_manager
        try:
            spec = km.kernel_spec_manager.get_kernel_spec(kernel_name or km.default_kernel_name)
        except Exception:
            return None
        argv = [str(a) for a in getattr(spec, "argv", []) or []]
        return argv if argv and any("ipykernel" in a for a in argv) else None

    def has_kernel_extension(self, kernel_id: str) -> bool:
        """Whether the kernel was started with the extension (an IPython kernel whose
        interpreter has jupyter_cancel, with ``load_kernel_extension`` on)."""
        try:
            manager = self.serverapp.kernel_manager.get_kernel(kernel_id)
        except KeyError:
            return False
        launch = getattr(manager, "_launch_args", None) or {}
        extra = launch.get("extra_arguments") or []
        return all(arg in extra for arg in autoload.ARGUMENTS)

    async def stop_extension(self) -> None:
        await self.tracker.stop()
        self._stop_shared_watchdog()

    def _stop_shared_watchdog(self) -> None:
        """It leaves once the kernels still connected are gone (their trees ended as they go)."""
        import os
        import shutil
        import signal

        from ..core.watchdog import SOCKET_ENV

        proc = getattr(self, "_watchdog", None)
        if proc is None:
            return
        path = os.environ.pop(SOCKET_ENV, None)
        if self._watchdog_env is not None:
            os.environ[SOCKET_ENV] = self._watchdog_env
        proc.send_signal(signal.SIGTERM)  # ours, by pid
        if path:
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)
        self._watchdog = None


def main(argv: list[str] | None = None) -> None:
    """``jupyter-cancel``: the server with the extension; ``jupyter-cancel autoload ...``: the
    environment-wide kernel autoload switch."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["autoload"]:
        sys.exit(autoload.command(args[1:]))
    JupyterCancel.launch_instance(argv)
