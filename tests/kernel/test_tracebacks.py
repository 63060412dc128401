"""An interrupted cell's traceback ends in the user's code, as in a stock kernel: no frame of
ours (the extension's SIGINT handler) at its end, in what the frontend shows or in
``sys.last_traceback``."""

from __future__ import annotations

import re

import pytest

from tests.helpers.kernel import Kernel
from tests.helpers.wait import until_file

# The ready file is made by system calls alone: with open() the signal could land in the
# codecs code that makes the file's text encoder, after the file exists (seen: a traceback
# ending in <frozen codecs>, which is right, but not the user's loop this test looks for).
# The cell is one statement: IPython compiles each top-level statement just before it runs it,
# so with the loop a statement of its own the signal could land in that compile, after the file
# exists (seen in CI on a loaded machine: a traceback ending in codeop's compile).
BUSY = (
    "if True:\n    import os\n    os.close(os.open({ready!r}, os.O_CREAT | os.O_WRONLY))\n"
    "    while True:\n        sum(range(1000))\n"
)
LAST_FRAME = (
    "import sys\n_tb = sys.last_traceback\nwhile _tb.tb_next is not None:\n    _tb = _tb.tb_next\n"
    "print(_tb.tb_frame.f_code.co_filename, _tb.tb_frame.f_code.co_name)"
)


def _plain(lines: list[str]) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(lines))


def _interrupted(k: Kernel, ready) -> dict:
    msg = k.send(BUSY.format(ready=str(ready)), cell="busy", stop_on_error=False)
    until_file(ready, ready.exists, 60, "the cell runs")
    k.km.interrupt_kernel()
    r = k.collect(msg)
    assert len(r.errors) == 1, r
    return r.errors[0]


@pytest.mark.parametrize("load_ext", [False, True], ids=["stock", "jupyter_cancel"])
def test_an_interrupted_cell_s_traceback_ends_in_the_user_s_code(tmp_path, load_ext):
    k = Kernel(load_ext=load_ext)
    try:
        error = _interrupted(k, tmp_path / "ready")
        assert error["ename"] == "KeyboardInterrupt"
        text = _plain(error["traceback"])
        assert "jupyter_cancel" not in text, text
        assert "sum(range(1000))" in text, text
        last = k.execute(LAST_FRAME, cell="inspect").stdout.split()
        assert "jupyter_cancel" not in last[0] and last[1] == "<module>", last
    finally:
        k.close()


def test_a_stopped_cell_s_traceback_ends_in_the_user_s_code(kernel, tmp_path):
    ready = tmp_path / "ready"
    msg = kernel.send(BUSY.format(ready=str(ready)), cell="busy", stop_on_error=False)
    until_file(ready, ready.exists, 60, "the cell runs")
    reply = kernel.control({"action": "stop_cell", "cell_id": "busy"})
    assert reply["status"] == "ok", reply
    r = kernel.collect(msg)
    assert len(r.errors) == 1 and r.errors[0]["ename"] == "Cancelled", r
    assert "jupyter_cancel/kernel" not in _plain(r.errors[0]["traceback"])
    last = kernel.execute(LAST_FRAME, cell="inspect").stdout.split()
    assert "jupyter_cancel" not in last[0] and last[1] == "<module>", last


def test_an_interrupt_shown_outside_the_cells_code_has_no_frame_of_ours(kernel):
    """An interrupt that lands while IPython compiles a cell's next statement is shown by its
    ``showtraceback`` directly (no custom exception hook there): our handler's frame is
    dropped there too (seen in CI: a traceback ending in ``_busy_sigint`` after codeop)."""
    code = (
        "import os, signal\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGINT)  # our handler raises KeyboardInterrupt here\n"
        "except KeyboardInterrupt:\n"
        "    get_ipython().showtraceback()  # as IPython's run_ast_nodes does\n"
        "print('shown')\n"
    )
    r = kernel.execute(code, cell="shown")
    assert "shown" in r.stdout, r
    assert [e["ename"] for e in r.errors] == ["KeyboardInterrupt"], r.errors
    text = _plain(r.errors[0]["traceback"])
    assert "jupyter_cancel" not in text and "os.kill" in text, text
