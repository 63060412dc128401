"""A real jupyter_server (pytest-jupyter, in-process) with the extension and real python3 kernels.

pytest-jupyter 0.11 has no entry point; importing its fixtures here keeps them (and their
autouse loop/cleanup fixtures) to this folder.
"""

import pytest
from pytest_jupyter.jupyter_core import *  # noqa: F403
from pytest_jupyter.jupyter_server import *  # noqa: F403

from tests.helpers.server import ServerHarness


@pytest.fixture
def jp_server_config():
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_cancel": True}, "allow_root": True},
        "JupyterCancel": {"tab_close_grace": 1.0, "grace": 1.0},
    }


@pytest.fixture
def harness(jp_serverapp, jp_fetch, jp_ws_fetch, tmp_path, jp_asyncio_loop):
    h = ServerHarness(jp_serverapp, jp_fetch, jp_ws_fetch, tmp_path)
    yield h
    jp_asyncio_loop.run_until_complete(h.close())
