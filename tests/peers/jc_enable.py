"""A pytest plugin for another project's test suite: jupyter_cancel loaded as it is in use.

Every jupyter_server the suite starts loads jupyter_cancel's server extension (as an installed
one is loaded, through its ``jupyter_server_config.d`` entry), whatever config the tests pass;
and every IPython kernel jupyter_client launches gets the kernel extension the way that server
extension starts kernels (``--IPKernelApp.extra_extensions`` on its command line).

    PYTHONPATH=<repo>/tests/peers python -m pytest -p jc_enable ...
"""

from __future__ import annotations

from typing import Any

from jupyter_client.manager import KernelManager

from jupyter_cancel.kernel.autoload import ARGUMENTS

_format = KernelManager.format_kernel_cmd


def _format_with_jupyter_cancel(self: Any, extra_arguments: list[str] | None = None) -> list[str]:
    extra = list(extra_arguments or [])
    argv = list(getattr(self.kernel_spec, "argv", None) or [])
    if any("ipykernel" in str(a) for a in argv) and not all(a in extra for a in ARGUMENTS):
        extra += ARGUMENTS
    return _format(self, extra_arguments=extra)


KernelManager.format_kernel_cmd = _format_with_jupyter_cancel  # type: ignore[method-assign]

try:
    from jupyter_server.serverapp import ServerApp
except ImportError:  # a suite without jupyter_server
    ServerApp = None

if ServerApp is not None:
    _find = ServerApp.find_server_extensions

    def _find_with_jupyter_cancel(self: Any) -> None:
        _find(self)
        self.jpserver_extensions["jupyter_cancel"] = True

    ServerApp.find_server_extensions = _find_with_jupyter_cancel  # type: ignore[method-assign]
