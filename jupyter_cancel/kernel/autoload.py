"""The kernel extension, loaded as an IPython kernel starts (not by ``%load_ext``).

The server starts each IPython kernel with ``ARGUMENTS`` on its command line and its
``c.JupyterCancel.*`` settings in ``SETTINGS_ENV``: the extension is in before the kernel
serves its first message, with no request of ours (no activity, no execution count). It is
loaded under this module's name, so a notebook's own ``%load_ext jupyter_cancel`` (the demos
have one, for kernels without a server) is quiet — ``load`` is idempotent — where IPython
would print "The jupyter_cancel extension is already loaded".

``JUPYTER_CANCEL_KERNEL_EXTENSION=0`` in a kernel's environment (its kernelspec's ``env``)
keeps it out of that kernel.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

log = logging.getLogger(__name__)

#: The kernel's extra command-line arguments (jupyter_client reuses them for every restart).
ARGUMENTS = ["--IPKernelApp.extra_extensions=jupyter_cancel.kernel.autoload"]
#: The settings, as JSON (``configure``'s keyword arguments).
SETTINGS_ENV = "JUPYTER_CANCEL_KERNEL_SETTINGS"
#: ``0`` / ``off`` / ``false``: do not load the extension in this kernel.
SWITCH_ENV = "JUPYTER_CANCEL_KERNEL_EXTENSION"


def switched_off() -> bool:
    return os.environ.get(SWITCH_ENV, "").strip().lower() in ("0", "off", "false", "no")


def load_ipython_extension(shell: Any) -> None:
    if switched_off():
        return
    from . import extension

    extension.load(shell)
    raw = os.environ.get(SETTINGS_ENV)
    if raw:
        try:
            settings = json.loads(raw)
            extension.configure(**settings)
        except (ValueError, TypeError) as err:
            log.warning("jupyter_cancel: ignoring %s: %s", SETTINGS_ENV, err)


def unload_ipython_extension(shell: Any) -> None:
    from . import extension

    extension.unload(shell)
