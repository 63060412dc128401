"""Cancellation that reaches a Dask cluster: a real LocalCluster (2 worker processes × 1
thread, with nannies) in its own process; each task holds a tree with a background job, a
setsid member and a double-fork daemon (tests/helpers/dask_tasks.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from distributed import Client, Future

import jupyter_cancel as jc
from tests.dask.conftest import ROOT
from tests.helpers.dask_tasks import MEMBERS, quick, run_task, tree_task, value
from tests.helpers.procs import wait_ready
from tests.helpers.wait import until, until_file, wait_gone

CLIENT = str(ROOT / "tests" / "helpers" / "dask_client.py")


def _executing(client: Client) -> int:
    return sum(client.run(lambda dask_worker: len(dask_worker.state.executing)).values())


def _remote(client: Client, state: str) -> list[dict]:
    return [op for op in jc.dask.remote_operations(client) if op["state"] == state]


def test_future_cancel_ends_the_tasks_tree_and_frees_the_worker(client, tmp_path):
    ready = tmp_path / "tree"
    future = jc.dask.submit(client, tree_task, str(ready))
    pids = wait_ready(ready, MEMBERS)
    op = jc.dask.operation_of(future)
    assert op is not None and op.kind == "dask" and op.state is jc.State.RUNNING
    future.cancel()  # plain Dask: the plugin ends the tree all the same
    assert wait_gone(pids, timeout=10) == []
    until(lambda: _executing(client) == 0, 10, "the worker's thread freed")
    (ended,) = until(lambda: _remote(client, "cancelled"), 10, "the worker's ended event")
    assert ended["reason"] == "user" and ended["cancel_latency"] > 0
    assert ended["worker"] in client.scheduler_info()["workers"]
    assert op.wait(10) is jc.State.CANCELLED and op.reason == "user"
    # The worker takes new work at once.
    assert client.submit(value, 7).result(timeout=10) == 7


def test_the_kernel_side_cancel_reaches_two_workers(client, tmp_path):
    readies = [tmp_path / "a", tmp_path / "b"]
    futures = [jc.dask.submit(client, tree_task, str(r), pure=False) for r in readies]
    pids = [p for r in readies for p in wait_ready(r, MEMBERS)]
    workers = until(lambda: [w for w, keys in client.processing().items() if keys], 10, "tasks on workers")
    assert len(workers) == 2, "one task on each worker (1 thread each)"
    ops = [jc.dask.operation_of(f) for f in futures]
    jc.cancel_all()  # what a re-run, interrupt or Stop does in a kernel
    assert all(op.state is jc.State.CANCELLED for op in ops), "cancel_all waits for the workers' reports"
    assert wait_gone(pids, timeout=0.5) == [], "the trees were gone when the operations ended"
    assert {f.status for f in futures} == {"cancelled"}
    assert sorted({op.tags["workers"][0] for op in ops}) == sorted(workers)


def test_client_cancel_force_ends_jc_run_inside_the_task(client, tmp_path):
    ready = tmp_path / "run"
    future = client.submit(run_task, str(ready))  # plain submit: jc.run inside the task
    pids = wait_ready(ready, MEMBERS)
    client.cancel([future], force=True)
    assert wait_gone(pids, timeout=10) == []
    until(lambda: _executing(client) == 0, 10, "jc.run raised Cancelled: the task ended")


def test_client_close_ends_its_tasks_trees(client, shared_cluster, tmp_path):
    jc.dask.install(client)  # this client hears the workers' events too
    ready = tmp_path / "close"
    other = Client(shared_cluster.address, set_as_default=False)
    jc.dask.submit(other, tree_task, str(ready))
    pids = wait_ready(ready, MEMBERS)
    other.close()
    assert wait_gone(pids, timeout=10) == []
    (ended,) = until(lambda: _remote(client, "cancelled"), 10, "the worker's ended event")
    assert ended["reason"] == "client_disconnected"


def _client_process(address: str, ready: Path, policy: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, CLIENT, address, str(ready), policy, str(tmp_path / "key")],
        stdin=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait()
    assert proc.stdin is not None
    proc.stdin.close()


def _clients(client: Client) -> set[str]:
    return set(client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.clients)))


def test_client_killed_ends_its_tasks_trees(client, shared_cluster, tmp_path):
    ready = tmp_path / "killed"
    proc = _client_process(shared_cluster.address, ready, "cancel", tmp_path)
    pids = wait_ready(ready, MEMBERS, timeout=30)
    _kill(proc)
    assert wait_gone(pids, timeout=15) == []


def test_detached_work_survives_its_client_and_ends_on_an_explicit_cancel(client, shared_cluster, tmp_path):
    ready = tmp_path / "detached"
    before = _clients(client)
    proc = _client_process(shared_cluster.address, ready, "detach", tmp_path)
    pids = wait_ready(ready, MEMBERS, timeout=30)
    key = until_file(
        tmp_path / "key", lambda: (tmp_path / "key").exists() and (tmp_path / "key").read_text(), 10
    )
    until(lambda: len(_clients(client)) > len(before), 10, "the second client known")
    _kill(proc)
    until(lambda: _clients(client) == before, 30, "the scheduler dropped the killed client")
    assert wait_gone(pids, timeout=0) == sorted(pids), "fire_and_forget: the work goes on"
    client.cancel([Future(key, client)], force=True)
    assert wait_gone(pids, timeout=10) == []


def test_same_key_resubmitted_after_a_cancel_gets_a_fresh_result(client, tmp_path):
    ready = tmp_path / "first"
    first = jc.dask.submit(client, tree_task, str(ready), key="same-key")
    pids = wait_ready(ready, MEMBERS)
    first.cancel()
    again = jc.dask.submit(client, quick, 3, key="same-key")
    assert again.result(timeout=20) == 3
    assert wait_gone(pids, timeout=10) == []


def test_a_tree_that_ends_by_itself_keeps_its_exit_code(client):
    future = jc.dask.submit(client, quick, 5)
    assert future.result(timeout=20) == 5
    op = jc.dask.operation_of(future)
    assert op is not None and op.wait(10) is jc.State.COMPLETED and op.reason is None


def test_a_failing_task_fails_its_operation(client):
    future = jc.dask.submit(client, value, "not a number", pure=False)
    future2 = jc.dask.submit(client, int, "x")
    with pytest.raises(ValueError):
        future2.result(timeout=20)
    op = jc.dask.operation_of(future2)
    assert op is not None and op.wait(10) is jc.State.FAILED and "ValueError" in (op.error or "")
    assert future.result(timeout=20) == "not a number"


def test_new_work_runs_right_after_cancelling_the_running_tasks(client, tmp_path):
    readies = [tmp_path / "x", tmp_path / "y"]
    futures = [jc.dask.submit(client, tree_task, str(r), pure=False) for r in readies]
    pids = [p for r in readies for p in wait_ready(r, MEMBERS)]
    client.cancel(futures, force=True)
    assert client.submit(value, 11, pure=False).result(timeout=5) == 11
    assert wait_gone(pids, timeout=10) == []


def test_worker_killed_its_trees_end(own_cluster, tmp_path):
    ready = tmp_path / "orphans"
    with Client(own_cluster.address, set_as_default=False) as c:
        future = jc.dask.submit(c, tree_task, str(ready))
        pids = wait_ready(ready, MEMBERS)
        (worker,) = until(lambda: [w for w, keys in c.processing().items() if keys], 10, "the task's worker")
        worker_pid = c.run(os.getpid, workers=[worker])[worker]
        os.kill(worker_pid, signal.SIGKILL)
        assert wait_gone(pids, timeout=10) == [], "the worker's watchdog ended them"
        del future


def test_client_restart_leaves_no_survivors_and_no_kill_warning(own_cluster, tmp_path):
    ready = tmp_path / "restart"
    with Client(own_cluster.address, set_as_default=False) as c:
        jc.dask.submit(c, tree_task, str(ready))
        pids = wait_ready(ready, MEMBERS)
        c.restart()
        assert wait_gone(pids, timeout=10) == []
    assert "still alive" not in own_cluster.log_text()


def test_compute_of_a_collection_is_one_operation(client, tmp_path):
    import dask

    ready = tmp_path / "delayed"
    future = jc.dask.compute(client, dask.delayed(tree_task)(str(ready)))
    pids = wait_ready(ready, MEMBERS)
    op = jc.dask.operation_of(future)
    assert op is not None and op.name == "Delayed on dask"
    jc.cancel(op)  # what Stop in the panel does
    assert op.state is jc.State.CANCELLED and op.reason == "user"
    assert wait_gone(pids, timeout=0.5) == []


def test_tracked_block_makes_what_it_submits_one_operation(client, tmp_path):
    readies = [str(tmp_path / "m1"), str(tmp_path / "m2")]
    with jc.dask.tracked(client, "a map") as op:
        futures = client.map(tree_task, readies)
    pids = [p for r in readies for p in wait_ready(Path(r), MEMBERS)]
    assert op.state is jc.State.RUNNING and op.progress == {"n": 0, "total": 2}
    assert {jc.dask.operation_of(f) for f in futures} == {op}
    jc.cancel(op)
    assert op.state is jc.State.CANCELLED
    assert wait_gone(pids, timeout=0.5) == []
    assert {f.status for f in futures} == {"cancelled"}
