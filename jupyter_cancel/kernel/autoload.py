"""The kernel extension, loaded as an IPython kernel starts (not by ``%load_ext``).

Two routes put ``ARGUMENTS`` on a kernel's command line: our server, for every IPython kernel
it starts (with its ``c.JupyterCancel.*`` settings in ``SETTINGS_ENV``), and, for a kernel
started by anything else (jupyter_client, nbclient, papermill, ``jupyter console``, VS Code),
the environment's ``jupyter_cancel_autoload.pth`` (``_jupyter_cancel_autoload``: the option
once, whoever added it first; ``jupyter-cancel autoload off`` turns that route off for the
environment). Either way the extension is in before the kernel
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
import sys
from typing import Any

from _jupyter_cancel_autoload import ARGUMENT, OFF_MARKER, SWITCH_ENV, kernel_switched_off

from ..protocol import SETTINGS_ENV  # the settings, as JSON (``configure``'s keyword arguments)

log = logging.getLogger(__name__)

#: The kernel's extra command-line arguments (jupyter_client reuses them for every restart).
ARGUMENTS = [ARGUMENT]
__all__ = ["ARGUMENTS", "SETTINGS_ENV", "SWITCH_ENV", "command"]


def switched_off() -> bool:
    return kernel_switched_off()


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


USAGE = """usage: jupyter-cancel autoload [on|off|status]

Whether every IPython kernel of this environment loads jupyter_cancel's kernel extension,
whoever starts it (VS Code, papermill, nbclient, jupyter console, a jupyter_server).
  status   say which (the default)
  off      turn it off for this environment (a marker file: {marker})
  on       turn it back on
One kernel: JUPYTER_CANCEL_KERNEL_EXTENSION=0 in its environment (its kernelspec's "env")
keeps the extension out of it, whichever route would load it."""


def command(args: list[str]) -> int:
    """``jupyter-cancel autoload [on|off|status]``."""
    word = args[0] if args else "status"
    if word in ("-h", "--help") or word not in ("on", "off", "status") or len(args) > 1:
        print(
            USAGE.format(marker=OFF_MARKER), file=sys.stderr if word not in ("-h", "--help") else sys.stdout
        )
        return 0 if word in ("-h", "--help") else 2
    if word == "off":
        os.makedirs(os.path.dirname(OFF_MARKER), exist_ok=True)
        with open(OFF_MARKER, "w") as fh:
            fh.write(
                "jupyter_cancel: kernel autoload is off in this environment (jupyter-cancel autoload on)\n"
            )
    elif word == "on":
        try:
            os.remove(OFF_MARKER)
        except FileNotFoundError:
            pass
    state = "off" if os.path.exists(OFF_MARKER) else "on"
    print(f"jupyter_cancel kernel autoload in {sys.prefix}: {state}")
    return 0
