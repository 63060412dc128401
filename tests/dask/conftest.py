"""A real Dask ``LocalCluster`` (2 worker processes × 1 thread) in a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("distributed", reason="DASK (distributed) IS NOT INSTALLED: pip install -e '.[dask]'")

from distributed import Client

from jupyter_cancel.dask import JupyterCancelPlugin
from tests.helpers.wait import until_file, wait_gone

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = str(ROOT / "tests" / "helpers" / "dask_cluster.py")


@dataclass
class Cluster:
    address: str
    proc: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _start(folder: Path) -> Cluster:
    ready = folder / "scheduler"
    log = folder / "cluster.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, CLUSTER, str(ready)], stdin=subprocess.PIPE, stderr=err, env=env, cwd=ROOT
        )
    address = until_file(
        ready, lambda: ready.exists() and ready.read_text(), 60, "the cluster's scheduler address"
    )
    cluster = Cluster(address, proc, log)
    # The plugin (and each worker's watchdog) before any test: they are the cluster's, not a leak.
    with Client(address, set_as_default=False) as client:
        client.register_plugin(JupyterCancelPlugin())
    return cluster


def _stop(cluster: Cluster) -> None:
    assert cluster.proc.stdin is not None
    cluster.proc.stdin.close()
    try:
        cluster.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        cluster.proc.kill()
        cluster.proc.wait()
    wait_gone([cluster.proc.pid])


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory):
    cluster = _start(tmp_path_factory.mktemp("dask"))
    yield cluster
    _stop(cluster)


@pytest.fixture
def own_cluster(tmp_path):
    """A cluster of this test alone: for tests that kill or restart its workers."""
    cluster = _start(tmp_path)
    yield cluster
    _stop(cluster)


@pytest.fixture
def client(shared_cluster):
    with Client(shared_cluster.address, set_as_default=False) as c:
        yield c
