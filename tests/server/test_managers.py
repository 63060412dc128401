"""Every kind of jupyter_server kernel manager: the synchronous ``MappingKernelManager``
(deprecated, still supported), the default ``AsyncMappingKernelManager``, and the async one
with pending kernels (``use_pending_kernels``: a start returns before the kernel is up). Each
trigger ends a cell's tree under each, and the kernel extension is in every kernel."""

from __future__ import annotations

import os
import signal

import pytest
from jupyter_client.multikernelmanager import AsyncMultiKernelManager
from tornado.ioloop import IOLoop

from tests.helpers.server import wait_gone

KINDS = {
    "sync": {"kernel_manager_class": "jupyter_server.services.kernels.kernelmanager.MappingKernelManager"},
    "async": {
        "kernel_manager_class": "jupyter_server.services.kernels.kernelmanager.AsyncMappingKernelManager"
    },
    "pending": {
        "kernel_manager_class": "jupyter_server.services.kernels.kernelmanager.AsyncMappingKernelManager"
    },
}


@pytest.fixture(params=sorted(KINDS))
def jp_server_config(request):
    config = {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_cancel": True},
            "allow_root": True,
            **KINDS[request.param],
        },
        "JupyterCancel": {"tab_close_grace": 1.0, "grace": 1.0},
    }
    if request.param == "pending":
        config["AsyncMappingKernelManager"] = {"use_pending_kernels": True}
    return config


async def _running(harness) -> tuple[str, object, list[int]]:
    kid = await harness.start_kernel()
    client = await harness.connect(kid)
    r = await client.execute("import sys; print('jupyter_cancel.kernel.extension' in sys.modules)")
    assert r["stdout"] == "True\n", "the kernel extension is not in the kernel"
    return kid, client, await harness.start_tree(client, cell="a")


async def test_only_the_sync_manager_runs_its_kernels_streams_off_the_servers_loop(harness):
    """A stock fact the harness rests on (``DirectClient``): under the synchronous manager every
    stream of a kernel, the browser's websocket's included, delivers on jupyter_core's runner
    thread, not on the server's loop. When this fails, upstream has fixed it: drive the sync
    kind over the websocket again."""
    kid = await harness.start_kernel()
    km = harness.app.kernel_manager
    on_server_loop = km.get_kernel(kid).loop is IOLoop.current()
    assert on_server_loop == isinstance(km, AsyncMultiKernelManager)


async def test_rerun_ends_the_cells_tree(harness):
    _, client, pids = await _running(harness)
    r = await client.execute("print('again')", cell="a")
    assert r["stdout"] == "again\n"
    assert await wait_gone(pids, timeout=10) == []


@pytest.mark.parametrize("action", ["interrupt", "restart"])
async def test_interrupt_and_restart_end_the_tree(harness, action):
    kid, client, pids = await _running(harness)
    await harness.api("POST", "api", "kernels", kid, action)
    assert await wait_gone(pids, timeout=10) == []
    if action == "restart":
        client.close()
        client = await harness.connect(kid)
    r = await client.execute("import sys; print('jupyter_cancel.kernel.extension' in sys.modules)", cell="b")
    assert r["stdout"] == "True\n", r


async def test_shutdown_ends_the_tree(harness):
    kid, _, pids = await _running(harness)
    await harness.api("DELETE", "api", "kernels", kid)
    assert await wait_gone(pids, timeout=10) == []


async def test_rest_stop_ends_the_tree(harness):
    kid, _, pids = await _running(harness)
    r = await harness.api("POST", "jupyter-cancel", "api", "kernels", kid, "cancel", body={})
    assert len(r["cancelled"]) == 1
    assert await wait_gone(pids, timeout=10) == []


async def test_kernel_death_ends_the_tree(harness):
    kid, _, pids = await _running(harness)
    manager = harness.app.kernel_manager.get_kernel(kid)
    os.kill(manager.provisioner.process.pid, signal.SIGKILL)
    assert await wait_gone(pids, timeout=10) == []
