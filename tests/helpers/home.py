"""Jupyter's and IPython's per-user folders in a temporary folder, for a test run or a
benchmark and everything it starts (kernels, servers, JupyterLab and its settings and
workspaces): never the user's home."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

#: Each folder's variable and its name under the temporary folder.
HOME_DIRS = {
    "JUPYTER_CONFIG_DIR": "config",
    "JUPYTER_DATA_DIR": "data",
    "JUPYTER_RUNTIME_DIR": "runtime",
    "JUPYTERLAB_SETTINGS_DIR": "lab-settings",
    "JUPYTERLAB_WORKSPACES_DIR": "lab-workspaces",
    "IPYTHONDIR": "ipython",
}


def private_jupyter_home(prefix: str, *, remove_at_exit: bool = False) -> str:
    """Point this process's (and its children's) Jupyter folders into a new temporary folder;
    call it before any Jupyter module reads a path. Returns that folder."""
    home = tempfile.mkdtemp(prefix=prefix)
    for var, sub in HOME_DIRS.items():
        os.environ[var] = os.path.join(home, sub)
        os.makedirs(os.environ[var], exist_ok=True)
    if remove_at_exit:
        atexit.register(shutil.rmtree, home, ignore_errors=True)
    return home
