"""Cooperative cancellation: scopes for threads and blocking clients, asyncio tasks."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

import jupyter_cancel as jc


def test_scope_on_cancel_unblocks_a_blocking_read():
    server, client = socket.socketpair()
    result = {}

    def reader():
        with jc.scope("reader") as s:
            result["scope"] = s
            s.on_cancel(lambda: client.shutdown(socket.SHUT_RDWR))
            result["data"] = client.recv(10)  # blocks until the cancel shuts the socket
            try:
                s.raise_if_cancelled()
            except jc.Cancelled as err:
                result["raised"] = err.reason

    t = threading.Thread(target=reader)
    t.start()
    while "scope" not in result:
        threading.Event().wait(0.01)
    cancelled = jc.cancel_all()
    t.join(5)
    assert not t.is_alive()
    assert [o.name for o in cancelled] == ["reader"]
    assert result["data"] == b"" and result["raised"] == "user"
    assert result["scope"].operation.state is jc.State.CANCELLED
    server.close()
    client.close()


def test_scope_raise_if_cancelled_and_late_callback_runs_at_once():
    with pytest.raises(jc.Cancelled) as info, jc.scope("loop") as s:
        jc.cancel(s.operation, reason="stop please")
        called = []
        s.on_cancel(lambda: called.append(1))
        assert called == [1] and s.cancelled
        s.raise_if_cancelled()
    assert info.value.reason == "user" and info.value.message == "stop please"
    assert str(info.value).endswith("by you (stop please)")
    assert s.operation.state is jc.State.CANCELLED


def test_scope_failure_and_completion_states():
    with pytest.raises(ZeroDivisionError), jc.scope("bad") as s:
        1 / 0
    assert s.operation.state is jc.State.FAILED
    with jc.scope("good") as g:
        pass
    assert g.operation.state is jc.State.COMPLETED


def test_task_cancelled_from_another_thread():
    async def main():
        started = asyncio.Event()

        async def work():
            started.set()
            await asyncio.sleep(60)

        t = jc.task(work(), name="work")
        await started.wait()
        op = jc.operations()[0]
        done = await asyncio.to_thread(jc.cancel, op.id)  # waits until the task is gone
        assert t.cancelled() and [o.id for o in done] == [op.id]
        return op

    op = asyncio.run(main())
    assert op.state is jc.State.CANCELLED and op.reason == "user"


def test_task_needs_a_coroutine_and_a_loop():
    with pytest.raises(TypeError):
        jc.task(lambda: None)

    async def coro():
        return 1

    with pytest.raises(RuntimeError, match="running event loop"):
        jc.task(coro())


def test_progress_stops_at_the_next_step():
    seen = []
    with pytest.raises(jc.Cancelled):
        for i in jc.progress(range(100), desc="steps"):
            seen.append(i)
            if i == 3:
                jc.cancel_all()
    assert seen == [0, 1, 2, 3]
    op = jc.operations(include_done=True)[-1]
    assert op.kind == "progress" and op.state is jc.State.CANCELLED


def test_cancel_before_entry_is_kept_and_cancelled_caught_says_how_the_block_ended():
    from jupyter_cancel.core import Registry
    from jupyter_cancel.core.starts import new_scope

    reg = Registry(watchdog=False)
    early = new_scope(reg, "early")
    early.cancel("kernel_interrupt")  # before the block: remembered, not lost
    with pytest.raises(jc.Cancelled), early:
        assert early.cancel_called
        early.raise_if_cancelled()
    assert early.cancelled_caught and early.operation.reason == "kernel_interrupt"
    late = new_scope(reg, "late")
    with late:
        late.cancel()
    # Cancelled, but the block never checked: it ended normally, nothing was caught.
    assert late.cancel_called and not late.cancelled_caught
    assert late.operation.state is jc.State.CANCELLED


def test_ctrl_c_in_plain_python_run_cancels_the_tree(tmp_path):
    """Outside Jupyter, Ctrl+C while ``jc.run`` waits ends the whole tree and raises KeyboardInterrupt."""
    import signal
    import subprocess
    import sys

    from tests.helpers.procs import tree_cmd, wait_ready
    from tests.helpers.wait import wait_gone

    ready = tmp_path / "ready"
    code = f"import jupyter_cancel as jc\njc.run({tree_cmd('three', ready)!r}, display=False)"
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    pids = wait_ready(ready, 3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert wait_gone(pids, timeout=0) == []


def test_progress_reads_like_tqdm_on_a_clock_the_test_drives():
    from jupyter_cancel.core.progress import progress_line, progress_timing

    bar = jc.progress(total=100, desc="embedding")
    bar.update(23)
    start = bar.operation.started
    assert (
        progress_line(bar, now=start + 4.0)
        == "embedding:  23%|####                | 23/100 [00:04<00:13, 5.75it/s]"
    )
    assert progress_timing(bar, now=start + 100.0) == "01:40<05:34, 4.35s/it"  # slow: seconds per item
    bar.close()
    big = jc.progress(
        total=3_000_000, desc="download", unit="B", unit_scale=True, initial=1_000_000, leave=False
    )
    big.update(500_000)
    assert progress_line(big, now=big.operation.started + 2.0).endswith("| 1.5M/3M [00:02<00:06, 250kB/s]")
    big.close()
    assert bar.operation.state is jc.State.COMPLETED and bar.operation.progress["unit"] == "it"
    with pytest.raises(TypeError, match="unexpected keyword arguments: bogus"):
        jc.progress(range(3), bogus=True)
