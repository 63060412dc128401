"""The server's own registry of the trees it ends itself (``server/owned.py``), driven
directly: what a trigger chooses, and a second trigger while the first is still ending."""

from __future__ import annotations

import subprocess

import psutil

from jupyter_cancel.core.model import CancelReason, Reason
from jupyter_cancel.core.proctree import Tree
from jupyter_cancel.server.owned import ServerWork
from tests.helpers.procs import left_alive, tree_cmd, wait_ready


def _reported(op_id: str, proc: psutil.Process | None, policy: str = "cancel") -> tuple[dict, Tree]:
    data = {
        "id": op_id,
        "name": "sleep",
        "kind": "process",
        "policy": policy,
        "kernel_id": "k",
        "started": 1.0,
    }
    return data, Tree(op_id=op_id, root=proc, grace=1.0)


def test_the_policy_decides_unless_named_and_a_second_trigger_skips_what_is_being_ended(tmp_path):
    work = ServerWork(grace=1.0)
    ready = tmp_path / "ready"
    child = subprocess.Popen(tree_cmd("three", ready))
    try:
        pids = wait_ready(ready, 3)
        reported = [_reported("a", psutil.Process(child.pid)), _reported("b", None, policy="continue")]
        chosen = work.choose(reported, CancelReason(Reason.TAB_CLOSED), by_id=False)
        assert [op.id for op in chosen] == ["a"]  # "continue" outlives a closed tab
        assert work.choose(reported, CancelReason(Reason.KERNEL_SHUTDOWN), by_id=True) == [
            op for op in work.registry.operations() if op.id == "b"
        ]  # "a" is being ended already: skipped; "b" named, whatever its policy
        assert chosen[0].started == 1.0 and chosen[0].state.value == "running"
        ended = work.end(chosen)
        assert child.wait(10) is not None and left_alive(pids) == []
        data = ended[0].to_json(pids=False)
        assert (data["state"], data["exit_code"], data["reason"]) == ("cancelled", 130, Reason.TAB_CLOSED)
        assert data["cancel_latency"] is not None and data["unkillable"] == []
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        work.end([op for op in work.registry.operations()])
