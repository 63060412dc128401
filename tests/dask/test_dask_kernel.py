"""The notebook's triggers reach the cluster: a real python3 kernel (with the extension)
submits to a real LocalCluster; re-running the cell or interrupting the kernel ends the
task's tree on the worker."""

from __future__ import annotations

import pytest

from tests.helpers.dask_tasks import MEMBERS
from tests.helpers.kernel import Kernel, wait_gone
from tests.helpers.procs import wait_ready


@pytest.fixture
def kernel():
    k = Kernel()
    yield k
    k.close()


def _submit(kernel: Kernel, address: str, ready: str, cell: str, wait: bool = False) -> str:
    return kernel.send(
        "from distributed import Client\nfrom tests.helpers.dask_tasks import tree_task\n"
        f"client = globals().get('client') or Client({address!r}, set_as_default=False)\n"
        f"future = jc.dask.submit(client, tree_task, {ready!r}, pure=False)\n"
        + ("future.result()\n" if wait else ""),
        cell=cell,
    )


def test_rerunning_the_cell_ends_the_remote_tree(kernel, shared_cluster, tmp_path):
    ready = tmp_path / "first"
    assert kernel.collect(_submit(kernel, shared_cluster.address, str(ready), "dask-cell")).ok
    pids = wait_ready(ready, MEMBERS, timeout=30)
    (op,) = [o for o in kernel.control({"action": "list"})["operations"] if o["kind"] == "dask"]
    assert op["cell_id"] == "dask-cell" and op["state"] == "running" and op["pids"] == []
    # The re-run's first line: the old tree is already gone on the worker.
    r = kernel.execute(
        f"import psutil\nprint([p for p in {pids!r} if psutil.pid_exists(p) and psutil.Process(p).status() != 'zombie'])",
        cell="dask-cell",
    )
    assert r.ok and r.stdout.strip() == "[]", r
    ops = {o["id"]: o for o in kernel.control({"action": "list"})["operations"]}
    assert (ops[op["id"]]["state"], ops[op["id"]]["reason"]) == ("cancelled", "cell_rerun")
    assert kernel.execute("client.close()", cell="cleanup").ok


def test_interrupting_a_cell_waiting_on_the_cluster_ends_the_remote_tree(kernel, shared_cluster, tmp_path):
    ready = tmp_path / "waiting"
    msg = _submit(kernel, shared_cluster.address, str(ready), "waits", wait=True)
    pids = wait_ready(ready, MEMBERS, timeout=30)
    kernel.km.interrupt_kernel()
    r = kernel.collect(msg)
    assert r.errors and r.errors[0]["ename"] in (
        "KeyboardInterrupt",
        "FutureCancelledError",
        "CancelledError",
    ), r
    assert wait_gone(pids, timeout=10) == []
    (op,) = [o for o in kernel.control({"action": "list"})["operations"] if o["kind"] == "dask"]
    assert (op["state"], op["reason"]) == ("cancelled", "kernel_interrupt")
    assert kernel.execute("client.close()", cell="cleanup").ok
