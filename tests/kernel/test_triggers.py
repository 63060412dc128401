"""Every trigger a kernel sees, through a real python3 kernel driven like JupyterLab."""

from __future__ import annotations

import os
import queue
import signal
import time

import psutil
import pytest

from tests.helpers.kernel import Kernel, wait_gone
from tests.helpers.procs import TREE, left_alive
from tests.helpers.wait import until_file


def start_tree(
    k: Kernel, cell: str, ready: str, mode: str = "three", count: int = 3, opts: str = "", **kw
) -> list[int]:
    r = k.execute(
        f"import sys\nop = jc.start([sys.executable, {TREE!r}, {mode!r}, {ready!r}], display=False{opts})\n"
        f"from tests.helpers.procs import wait_ready\nfrom pathlib import Path\n"
        f"pids = wait_ready(Path({ready!r}), {count})\nprint(pids)",
        cell=cell,
        **kw,
    )
    assert r.ok, r
    return eval(r.stdout.strip().splitlines()[-1])


def test_owner_tags_are_captured_at_start(kernel, tmp_path):
    start_tree(kernel, "cell-a", str(tmp_path / "a"))
    (op,) = kernel.control({"action": "list"})["operations"]
    assert op["cell_id"] == "cell-a" and op["client_session"] == kernel.session
    assert op["kernel_id"] == kernel.kernel_id and op["state"] == "running"
    # A thread started in cell A that starts work after cell B began still belongs to A.
    r = kernel.execute(
        "import threading\nev = threading.Event()\nres = {}\n"
        "def later():\n    ev.wait(10)\n    res['op'] = jc.start(['sleep', '60'], display=False)\n"
        "t = threading.Thread(target=later); t.start()",
        cell="cell-thread",
    )
    assert r.ok
    r = kernel.execute("ev.set(); t.join(); print(res['op'].cell_id)", cell="cell-b")
    assert r.stdout.strip() == "cell-thread"
    kernel.execute("jc.cancel_all()", cell="cleanup")


def test_rerun_kills_previous_tree_before_new_code_runs(kernel, tmp_path):
    old = start_tree(kernel, "cell-1", str(tmp_path / "old"))
    other = start_tree(kernel, "cell-2", str(tmp_path / "other"))
    # The re-run's code checks, first thing, that the old pids are gone.
    r = kernel.execute(
        f"import psutil\nprint([p for p in {old!r} if psutil.pid_exists(p) and psutil.Process(p).status() != 'zombie'])",
        cell="cell-1",
    )
    assert r.stdout.strip() == "[]", r
    assert sorted(wait_gone(other, timeout=0)) == sorted(other), "another cell's work is independent"
    ops = kernel.control({"action": "list"})["operations"]
    reasons = {o["cell_id"]: (o["state"], o["reason"]) for o in ops if o["kind"] == "process"}
    assert reasons == {"cell-1": ("cancelled", "cell_rerun"), "cell-2": ("running", None)}
    kernel.control({"action": "cancel", "all": True})
    assert wait_gone(other) == []


def test_deleted_cell_cancels_its_work(kernel, tmp_path):
    pids = start_tree(kernel, "doomed", str(tmp_path / "d"))
    r = kernel.execute("1 + 1", cell="survivor", deleted=["doomed", 42])
    assert r.ok
    assert wait_gone(pids) == []
    ops = kernel.control({"action": "list"})["operations"]
    assert [o["reason"] for o in ops if o["cell_id"] == "doomed"] == ["cell_deleted"]


def test_routed_shell_escape_is_an_operation_cancelled_before_rerun(kernel):
    msg = kernel.send("!sleep 1000", cell="bang")
    (op,) = kernel.wait_for_ops(1)
    assert op["name"] == "!sleep 1000" and op["cell_id"] == "bang"
    pids = op["pids"]
    # What the Lab extension does on Shift+Enter of a busy cell: stop its work, then re-run.
    reply = kernel.control({"action": "cancel", "cell_id": "bang", "reason": "cell_rerun"})
    assert reply["cancelled"] == [op["id"]]
    assert wait_gone(pids, timeout=0) == []
    old = kernel.collect(msg)
    assert old.errors and old.errors[0]["ename"] == "Cancelled"
    assert old.errors[0]["traceback"] == ["\x1b[0;33mStopped:\x1b[0m !sleep 1000 — cell re-run"]
    r = kernel.execute("!echo again", cell="bang")
    assert r.ok and r.stdout == "again\n"
    assert kernel.value("_exit_code") == 0


def test_control_cancel_answers_while_cell_sleeps(kernel, tmp_path):
    pids = start_tree(kernel, "bg", str(tmp_path / "bg"))
    busy = kernel.send(_sleep_after(tmp_path / "busy"), cell="sleeper")
    until_file(tmp_path / "busy", (tmp_path / "busy").exists, 30, "the cell is inside time.sleep")
    reply = kernel.control({"action": "cancel", "cell_id": "bg"})
    assert reply["status"] == "ok" and len(reply["cancelled"]) == 1
    assert wait_gone(pids, timeout=0) == []
    kernel.km.interrupt_kernel()
    assert kernel.collect(busy).errors[0]["ename"] == "KeyboardInterrupt"


def test_malformed_control_content_gets_error_reply_and_kernel_lives(kernel):
    for content in [
        {},
        {"action": "explode"},
        {"action": "cancel"},
        {"action": "cancel", "operation_ids": "x"},
        {"action": "cancel", "cell_id": 5},
        {"action": "cancel", "all": "yes"},
        {"action": "cancel", "all": True, "reason": ""},
        {"action": "list", "evil": 1},
    ]:
        reply = kernel.control(content)
        assert reply["status"] == "error" and reply["ename"] in ("ValueError", "TypeError"), (content, reply)
    reply = kernel.control({"action": "cancel", "operation_ids": ["not-yet-known"]})
    assert reply == {"status": "ok", "cancelled": [], "operations": reply["operations"]}
    assert kernel.execute("print(6 * 7)").stdout == "42\n"


def test_interrupt_while_busy_cancels_foreground_and_background(kernel, tmp_path):
    bg = start_tree(kernel, "bg", str(tmp_path / "bg"))
    msg = kernel.send("jc.run(['sleep', '1000'])", cell="fg")
    ops = kernel.wait_for_ops(2)
    fg = [p for o in ops if o["cell_id"] == "fg" for p in o["pids"]]
    kernel.km.interrupt_kernel()
    r = kernel.collect(msg)
    assert r.errors[0]["ename"] == "Cancelled" and "kernel interrupted" in r.errors[0]["traceback"][0]
    assert wait_gone(bg + fg) == []


def test_interrupt_while_idle_cancels_background_work(kernel, tmp_path):
    bg = start_tree(kernel, "bg", str(tmp_path / "bg"))
    kernel.km.interrupt_kernel()  # ipykernel ignores SIGINT when idle; we do not
    assert wait_gone(bg) == []
    ops = kernel.control({"action": "list"})["operations"]
    assert [o["reason"] for o in ops if o["kind"] == "process"] == ["kernel_interrupt"]
    assert kernel.execute("print('alive')").stdout == "alive\n"


def test_message_mode_interrupt(tmp_path):
    k = Kernel(interrupt_mode="message")
    try:
        bg = start_tree(k, "bg", str(tmp_path / "bg"))
        msg = k.send(_sleep_after(tmp_path / "busy"), cell="fg")
        until_file(tmp_path / "busy", (tmp_path / "busy").exists, 30, "the cell is inside time.sleep")
        k.km.interrupt_kernel()  # an interrupt_request on the control channel
        assert k.collect(msg).errors[0]["ename"] == "KeyboardInterrupt"
        assert wait_gone(bg) == []
    finally:
        k.close()


def test_detach_survives_interrupt_and_shutdown_but_stays_stoppable(tmp_path):
    k = Kernel()
    kept = []
    try:
        stoppable = start_tree(k, "d1", str(tmp_path / "d1"), mode="child", count=1, opts=", policy='detach'")
        kept = start_tree(k, "d2", str(tmp_path / "d2"), mode="child", count=1, opts=", policy='detach'")
        k.km.interrupt_kernel()
        # The next reply comes after the interrupt was handled (SIGTERMs go out in its handler).
        assert k.execute("pass", cell="after").ok
        assert k.value("sorted(o.state.value for o in jc.operations())") == ["running", "running"]
        assert wait_gone(stoppable + kept, timeout=0) == stoppable + kept
        (op_id,) = [o["id"] for o in k.wait_for_ops(2) if o["cell_id"] == "d1"]
        reply = k.control({"action": "cancel", "operation_ids": [op_id]})  # explicit: applies to detach
        assert reply["cancelled"] == [op_id] and wait_gone(stoppable) == []
        k.close()  # a clean shutdown: kernel_shutdown does not apply to detach
        assert not k.km.is_alive()
        assert wait_gone(kept, timeout=0) == kept, "detach work ended with its kernel"
    finally:
        for pid in left_alive(kept):
            os.kill(pid, signal.SIGKILL)
        wait_gone(kept)
        if k.km.has_kernel:
            k.close()


def test_cancelled_renders_as_one_line(kernel, tmp_path):
    ready = tmp_path / "running"
    msg = kernel.send(f"jc.run(['sh', '-c', 'touch {ready}; exec sleep 60'], name='long job')")
    until_file(ready, ready.exists, 30, "the job runs")
    assert len(kernel.control({"action": "cancel", "all": True})["cancelled"]) == 1
    r = kernel.collect(msg)
    assert r.errors[0]["traceback"] == ["\x1b[0;33mStopped:\x1b[0m long job — by you"]


@pytest.mark.slow
def test_live_output_and_bounded_memory_for_a_gigabyte(kernel):
    r = kernel.execute("op = jc.run('printf one; sleep 0.3; printf two', shell=True)")
    assert r.stdout == "onetwo"
    proc = psutil.Process(kernel.pid)
    before = proc.memory_info().rss
    peak = before
    msg = kernel.send(
        "op = jc.run('yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 1000000000', shell=True)"
    )
    deadline = time.monotonic() + 120
    result = None
    while time.monotonic() < deadline:
        peak = max(peak, proc.memory_info().rss)  # sampled whenever iopub is quiet for 50 ms
        if kernel.kc.iopub_channel.socket.poll(timeout=50):
            result = kernel.collect(msg, timeout=120)
            break
    assert result is not None and result.ok
    assert (peak - before) < 40 * 1024 * 1024, f"kernel grew by {(peak - before) >> 20} MB"
    assert "characters of output skipped" in result.stdout
    assert len(result.stdout) < 50 * 1024 * 1024
    assert kernel.value("len(op.output)") == 64 * 1024


def test_unload_ext_removes_every_hook(kernel, tmp_path):
    r = kernel.execute(
        "%unload_ext jupyter_cancel\nimport signal\nprint(get_ipython().system.__func__.__qualname__, signal.getsignal(signal.SIGINT).__name__)"
    )
    assert r.ok and r.stdout.split() == ["ZMQInteractiveShell.system_piped", "default_int_handler"]
    r = kernel.execute("!echo plain again")
    assert r.stdout.replace("\r\n", "\n") == "plain again\n"  # pexpect, as stock IPython
    assert kernel.value("len(jc.operations())") == 0
    with pytest.raises(queue.Empty):  # nobody answers the control request any more
        kernel.control({"action": "list"}, timeout=1)
    r = kernel.execute("%load_ext jupyter_cancel")  # and it loads again
    assert r.ok and kernel.control({"action": "list"})["status"] == "ok"


def _sleep_after(ready) -> str:
    """A cell that says it is about to block (a file appears), then blocks in time.sleep."""
    return f"import os, time\nos.close(os.open({str(ready)!r}, os.O_CREAT))\ntime.sleep(30)"


def test_without_a_frontend_widget_work_shows_as_plain_output_and_an_html_bar(kernel):
    """No labextension announced itself (nbconvert, VS Code): live output is a plain stream and
    jc.progress an HTML <progress> updated in place."""
    r = kernel.execute(
        "op = jc.run('echo built', shell=True)\nfor i in jc.progress(range(3), desc='steps'): pass"
    )
    assert r.ok and "built" in r.stdout
    html = [d["data"]["text/html"] for d in r.displays if "text/html" in d.get("data", {})]
    assert html and "<progress" in html[0] and "steps" in html[0]
    assert "completed" in html[-1]
    assert not [d for d in r.displays if "application/vnd.jupyter.widget-view+json" in d.get("data", {})]


def test_interrupting_an_llm_cli_stream_reads_as_one_line(kernel, tmp_path):
    ready = tmp_path / "running"
    msg = kernel.send(
        "from jupyter_cancel.llm import stream_cli\n"
        f"stream_cli(['sh', '-c', 'touch {ready}; exec sleep 60'], name='llama-cli')"
    )
    until_file(ready, ready.exists, 30, "the CLI runs")
    kernel.km.interrupt_kernel()
    r = kernel.collect(msg)
    tb = r.errors[0]["traceback"]
    assert tb == ["\x1b[0;33mStopped:\x1b[0m llama-cli — kernel interrupted"], "\n".join(tb)


def test_jc_run_as_a_cells_last_line_adds_no_out_prompt(kernel):
    """Its output (or widget) is already shown: no ``Out[n]: <Operation … completed>`` under it.
    An operation started with ``display=False`` still shows as one line when displayed."""
    r = kernel.execute("jc.run(['echo', 'hello-run'])", cell="last-line")
    assert r.ok and "hello-run" in r.stdout, r
    assert [d for d in r.displays if "Operation" in str(d.get("data"))] == [], r.displays
    r = kernel.execute("quiet = jc.start(['true'], display=False)\nquiet.wait()\nquiet", cell="not-shown")
    assert r.ok and [d["data"]["text/plain"][:11] for d in r.displays] == ["<Operation "], r.displays
