"""Loads jupyter_cancel's kernel extension into every IPython kernel of this environment,
whoever starts it (a jupyter_server, jupyter_client / nbclient / papermill, ``jupyter
console``, VS Code running the kernelspec's command itself).

Imported by ``jupyter_cancel_autoload.pth`` only when the interpreter's command line mentions
``ipykernel`` (a substring test: every other Python process pays nothing more), it adds one
option to the kernel's command line — ``--IPKernelApp.extra_extensions=…`` — the same one a
jupyter_server with jupyter_cancel passes (given twice, it is still one extension). It imports
nothing of jupyter_cancel: the kernel does, as it starts.

Off for one kernel: ``JUPYTER_CANCEL_KERNEL_EXTENSION=0`` in its environment (its
kernelspec's ``env``). Off for a whole environment: ``jupyter-cancel autoload off`` (a marker
file under ``sys.prefix``; ``on`` removes it).
"""

from __future__ import annotations

import os
import sys

#: The option added to a kernel's command line (kept equal to the server's).
ARGUMENT = "--IPKernelApp.extra_extensions=jupyter_cancel.kernel.autoload"
SWITCH_ENV = "JUPYTER_CANCEL_KERNEL_EXTENSION"
#: Its presence turns autoload off for every kernel of this environment.
OFF_MARKER = os.path.join(sys.prefix, "etc", "jupyter_cancel", "kernel-autoload-off")

_OPTIONS_WITH_VALUE = ("-X", "-W", "-Q")
_KERNEL_MODULES = ("ipykernel_launcher", "ipykernel")


def is_kernel_command(argv: list[str]) -> bool:
    """Whether an interpreter command line (``sys.orig_argv``) starts an IPython kernel:
    ``python [options] -m ipykernel_launcher|ipykernel …`` or ``python …/ipykernel_launcher.py …``."""
    args = iter(argv[1:])
    for arg in args:
        if arg == "-m":
            return next(args, "") in _KERNEL_MODULES
        if arg in _OPTIONS_WITH_VALUE:
            next(args, None)
            continue
        if arg == "-c" or arg == "-":
            return False
        if arg.startswith("-"):
            continue
        return os.path.basename(arg) == "ipykernel_launcher.py"
    return False


def kernel_switched_off(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """``JUPYTER_CANCEL_KERNEL_EXTENSION=0`` (``off``, ``false``, ``no``): not in this kernel."""
    return environ.get(SWITCH_ENV, "").strip().lower() in ("0", "off", "false", "no")


def switched_off(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Autoload is off for this kernel, or for the whole environment."""
    return kernel_switched_off(environ) or os.path.exists(OFF_MARKER)


def add_argument(argv: list[str]) -> bool:
    """Append ``ARGUMENT`` to a kernel's ``sys.argv`` (not if it is there already); True if added."""
    if ARGUMENT in argv:
        return False
    argv.append(ARGUMENT)
    return True


if is_kernel_command(list(getattr(sys, "orig_argv", ()))) and not switched_off():
    add_argument(sys.argv)
