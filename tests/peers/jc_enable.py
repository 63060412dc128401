"""A pytest plugin for another project's test suite: every jupyter_server its tests start
loads jupyter_cancel's server extension, as an installed one is loaded (its
``jupyter_server_config.d`` entry), whatever config the tests pass.

    PYTHONPATH=<repo>/tests/peers python -m pytest -p jc_enable ...
"""

from __future__ import annotations

from typing import Any

from jupyter_server.serverapp import ServerApp

_find = ServerApp.find_server_extensions


def _find_with_jupyter_cancel(self: Any) -> None:
    _find(self)
    self.jpserver_extensions["jupyter_cancel"] = True


ServerApp.find_server_extensions = _find_with_jupyter_cancel  # type: ignore[method-assign]
