"""jupyter_cancel: make work launched from Jupyter notebooks stoppable, for real."""

from __future__ import annotations

from typing import Any

from ._version import __version__ as __version__
from .core import Cancelled as Cancelled
from .core import CancelScope as CancelScope
from .core import JupyterCancelError as JupyterCancelError
from .core import Operation as Operation
from .core import Policy as Policy
from .core import Reason as Reason
from .core import State as State
from .core import adopt as adopt
from .core import cancel as cancel
from .core import cancel_all as cancel_all
from .core import operations as operations
from .core import policy as policy
from .core import progress as progress
from .core import run as run
from .core import scope as scope
from .core import start as start
from .core import task as task

__all__ = [
    "CancelScope",
    "Cancelled",
    "JupyterCancelError",
    "Operation",
    "Policy",
    "Reason",
    "State",
    "__version__",
    "adopt",
    "cancel",
    "cancel_all",
    "operations",
    "policy",
    "progress",
    "run",
    "scope",
    "start",
    "task",
]


def __getattr__(name: str) -> Any:
    """``jc.dask``: imported on first use only (Dask is an optional extra)."""
    if name == "dask":
        import importlib

        return importlib.import_module(".dask", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_cancel``: install the notebook API's hooks in this kernel."""
    from .kernel.extension import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from .kernel.extension import unload

    unload(ipython)


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .server.app import JupyterCancel  # imported only when a server asks

    return [{"module": "jupyter_cancel.server.app", "app": JupyterCancel}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "jupyter-cancel"}]
