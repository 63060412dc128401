"""The core: operations, the registry, process trees, scopes, the watchdog.

Imports nothing from Jupyter (IPython, jupyter_server, ipywidgets): a test pins it.
"""

from .api import Host as Host
from .api import adopt as adopt
from .api import cancel as cancel
from .api import cancel_all as cancel_all
from .api import operations as operations
from .api import policy as policy
from .api import registry as default_registry
from .api import run as run
from .api import scope as scope
from .api import set_host as set_host
from .api import start as start
from .api import task as task
from .errors import Cancelled as Cancelled
from .errors import JupyterCancelError as JupyterCancelError
from .model import Policy as Policy
from .model import Reason as Reason
from .model import State as State
from .operation import Operation as Operation
from .operation import Runner as Runner
from .progress import Progress as Progress
from .progress import progress as progress
from .registry import Registry as Registry
from .scope import CancelScope as CancelScope

__all__ = [
    "CancelScope",
    "Cancelled",
    "Host",
    "JupyterCancelError",
    "Operation",
    "Policy",
    "Progress",
    "Reason",
    "Registry",
    "Runner",
    "State",
    "adopt",
    "policy",
    "cancel",
    "cancel_all",
    "default_registry",
    "operations",
    "progress",
    "run",
    "scope",
    "set_host",
    "start",
    "task",
]
