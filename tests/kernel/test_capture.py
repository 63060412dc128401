"""Capture: processes a cell starts without jc.* are that cell's operations (real kernel)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.helpers.kernel import Kernel, wait_gone
from tests.helpers.procs import TREE, left_alive, wait_ready

#: Each launch style starts tree.py "three" (a child and a setsid grandchild) announcing to READY.
STYLES = {
    "popen": "subprocess.Popen([sys.executable, TREE, 'three', READY])",
    "popen_new_session": "subprocess.Popen([sys.executable, TREE, 'three', READY], start_new_session=True)",
    "os_system_background": "os.system(f'{sys.executable} {TREE} three {READY} &')",
    "thread_subprocess_run": (
        "threading.Thread(target=subprocess.run, args=([sys.executable, TREE, 'three', READY],), daemon=True).start()"
    ),
    "multiprocessing_process": (
        "multiprocessing.get_context('fork').Process(target=subprocess.run, args=([sys.executable, TREE, 'three', READY],)).start()"
    ),
    "asyncio_subprocess": "await asyncio.create_subprocess_exec(sys.executable, TREE, 'three', READY)",
}
HEAD = "import subprocess, sys, os, threading, multiprocessing, asyncio\n"


def launch(k: Kernel, style: str, cell: str, ready, **kw) -> list[int]:
    code = HEAD + f"TREE, READY = {TREE!r}, {str(ready)!r}\n" + STYLES[style]
    r = k.execute(code, cell=cell, **kw)
    assert r.ok, r
    return wait_ready(ready, 3)


@pytest.mark.parametrize("style", sorted(STYLES))
def test_rerun_ends_what_plain_code_started(kernel, tmp_path, style):
    pids = launch(kernel, style, "plain", tmp_path / "t")
    r = kernel.execute("pass", cell="plain")  # the same cell again
    assert r.ok
    assert wait_gone(pids, timeout=10) == []


def test_interrupt_and_shutdown_end_captured_trees_and_spare_a_bystander(tmp_path):
    bystander = subprocess.Popen([sys.executable, TREE, "child", str(tmp_path / "by")])
    k = Kernel()
    try:
        wait_ready(tmp_path / "by", 1)
        a = launch(k, "popen_new_session", "a", tmp_path / "a")
        k.km.interrupt_kernel()
        assert wait_gone(a, timeout=10) == []
        b = launch(k, "os_system_background", "b", tmp_path / "b")
        k.close()  # shutdown
        assert wait_gone(b, timeout=10) == []
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
        if k.km.has_kernel:
            k.close()


def test_kernel_sigkill_ends_captured_trees(tmp_path):
    k = Kernel()
    pids = launch(k, "popen_new_session", "a", tmp_path / "a")
    os.kill(k.pid, signal.SIGKILL)
    assert wait_gone(pids, timeout=10) == []
    k.kc.stop_channels()
    k.km.shutdown_kernel(now=True)  # reaps the killed kernel


def test_short_lived_processes_never_show_up(kernel):
    r = kernel.execute(
        "import subprocess\n"
        "seen = []\n"
        "unsubscribe = jc.core.default_registry().subscribe(lambda e, d: seen.append((e, d['name'])))\n"
        "for _ in range(20): subprocess.run(['true'])\n"
        "probe = subprocess.run(['echo', 'x'], capture_output=True).stdout\n"
        "unsubscribe()\n"
        "print(len(seen), probe)"
    )
    assert r.ok and r.stdout.split() == ["0", "b'x\\n'"]
    assert kernel.value("len([o for o in jc.operations(include_done=True) if o.name == 'true'])") == 20


def test_policies_apply_to_plain_code(tmp_path):
    """`with jc.policy(...)` reaches plain Popen: continue survives a closed tab and dies on
    shutdown; detach survives both and is stopped only explicitly."""
    k = Kernel()
    survivor = []
    try:
        code = HEAD + f"TREE = {TREE!r}\n"
        r = k.execute(
            code + "with jc.policy('continue'):\n"
            f"    server = subprocess.Popen([sys.executable, TREE, 'child', {str(tmp_path / 'c')!r}])\n"
            "with jc.policy('detach'):\n"
            f"    d1 = subprocess.Popen([sys.executable, TREE, 'child', {str(tmp_path / 'd1')!r}])\n"
            f"    d2 = subprocess.Popen([sys.executable, TREE, 'child', {str(tmp_path / 'd2')!r}])\n"
            f"plain = subprocess.Popen([sys.executable, TREE, 'child', {str(tmp_path / 'p')!r}])\n",
            cell="servers",
        )
        assert r.ok, r
        (c,), (d1,), (d2,), (p,) = (wait_ready(tmp_path / n, 1) for n in ("c", "d1", "d2", "p"))
        survivor = [d2]
        reply = k.control({"action": "cancel", "client_session": k.session, "reason": "tab_closed"})
        assert len(reply["cancelled"]) == 1 and wait_gone([p]) == []
        assert left_alive([c, d1, d2]) == [c, d1, d2], "continue and detach survive a closed tab"
        ops = k.wait_for_ops(3)
        (op_id,) = [o["id"] for o in ops if d1 in o["pids"]]
        assert k.control({"action": "cancel", "operation_ids": [op_id]})["cancelled"] == [op_id]
        assert wait_gone([d1]) == []  # detach: stopped explicitly
        k.close()  # shutdown
        assert wait_gone([c]) == [], "continue work ends with its kernel"
        assert left_alive([d2]) == [d2], "detach work survives its kernel"
    finally:
        for pid in left_alive(survivor):
            os.kill(pid, signal.SIGKILL)
        assert wait_gone(survivor) == []
        if k.km.has_kernel:
            k.close()


def test_a_pool_belongs_to_the_cell_that_created_it(kernel):
    r = kernel.execute(
        "from concurrent.futures import ProcessPoolExecutor\npool = ProcessPoolExecutor(2)", cell="make-pool"
    )
    assert r.ok
    use = "print(sum(pool.map(abs, range(-5, 5))))"
    assert kernel.execute(use, cell="use-pool").stdout == "25\n"  # workers start here
    assert kernel.execute(use, cell="use-pool").stdout == "25\n"  # re-run: the pool lives on
    workers = kernel.value("sorted(pool._processes)")
    assert len(workers) == 2 and left_alive(workers) == workers
    kernel.execute("pass", cell="make-pool")  # re-running the creating cell ends it
    assert wait_gone(workers, timeout=10) == []
    r = kernel.execute(
        "pool = ProcessPoolExecutor(2)\nprint(sum(pool.map(abs, range(-5, 5))))", cell="make-pool"
    )
    assert r.stdout == "25\n", r  # and the fresh pool works
    kernel.execute("pool.shutdown()", cell="cleanup")


def test_capture_off_is_stock_behaviour_and_adopt_takes_a_process_back(kernel, tmp_path):
    r = kernel.execute("%jc_capture off", cell="switch")
    assert "capture is off" in r.stdout
    pids = launch(kernel, "popen", "plain", tmp_path / "t")
    assert kernel.execute("pass", cell="plain").ok
    assert left_alive(pids) == pids, "captured although capture is off"
    r = kernel.execute(
        HEAD + f"TREE = {TREE!r}\n"
        f"p = subprocess.Popen([sys.executable, TREE, 'child', {str(tmp_path / 'adopted')!r}])\n"
        "op = jc.adopt(p, name='adopted')\nprint(op.name, op.state.value)",
        cell="adopt",
    )
    (adopted,) = wait_ready(tmp_path / "adopted", 1)
    assert r.stdout.split() == ["adopted", "running"]
    kernel.execute("%jc_capture on", cell="switch")
    assert kernel.execute("pass", cell="adopt").ok
    assert wait_gone([adopted]) == []
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    assert wait_gone(pids) == []


def test_kernel_machinery_and_our_helpers_are_not_captured(kernel):
    names = kernel.value("[o.name for o in jc.operations(include_done=True)]")
    assert names == [], names  # the watchdog, jc's own spawn, ipykernel: none are operations
