"""The demo notebooks execute (nbclient, a real python3 kernel) with their long steps cut short."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_notebook_executes(name, tmp_path, monkeypatch):
    for item in NOTEBOOKS.iterdir():
        if item.suffix in (".ipynb", ".py"):
            shutil.copy(item, tmp_path / item.name)
    monkeypatch.setenv("JUPYTER_CANCEL_DEMO_QUICK", "1")
    nb = nbformat.read(tmp_path / name, as_version=4)
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"
    ]
    assert errors == []
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "Traceback" not in text
    if name.startswith("00"):
        assert "cancelled user 130 []" in text
    if name.startswith("01"):
        assert "completed exit 0" in text
        stopped = re.search(r"cancelled user exit 130 (\d+) processes stopped, left running: \[\]", text)
        assert stopped and int(stopped.group(1)) >= 2, text[-2000:]  # make and at least one job
    if name.startswith("02"):
        assert "24 of 24 embedded" in text
    if name.startswith("03"):
        assert "40 tokens" in text


#: nbconvert / papermill kernels: the kernel extension loads itself (installed is enough), or
#: is switched off (then ``jc.progress`` draws without it).
KERNELS = pytest.mark.parametrize("extension", ["autoloaded", "off"])


def _kernel_env(monkeypatch, extension: str) -> None:
    if extension == "off":
        monkeypatch.setenv("JUPYTER_CANCEL_KERNEL_EXTENSION", "0")


@KERNELS
def test_progress_without_a_frontend_is_one_line_redrawn(tmp_path, monkeypatch, extension):
    """``nbconvert --execute`` (no server, no labextension, no ``%load_ext``): a progress bar
    is one display updated in place whose text is tqdm's line, not one red stderr line per
    update — with the kernel extension (an HTML bar beside the text) or without it."""
    _kernel_env(monkeypatch, extension)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import jupyter_cancel as jc\n"
            "for i in jc.progress(range(40), desc='plain'):\n    sum(range(1000))  # the work"
        )
    ]
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = nb.cells[0].outputs
    assert [o.output_type for o in outputs] == ["display_data"], outputs
    assert ("text/html" in outputs[0].data) == (extension == "autoloaded"), outputs  # the HTML bar
    line = outputs[0].data["text/plain"]
    assert (
        line.startswith("plain: 100%|") and "40/40 [" in line and "it/s]" in line and "completed" in line
    ), line


@KERNELS
def test_nested_progress_bars_with_leave_false_leave_only_the_outer_one(tmp_path, monkeypatch, extension):
    """tqdm's nesting: the inner loop's bar (``leave=False``) goes once it completes."""
    _kernel_env(monkeypatch, extension)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import jupyter_cancel as jc\n"
            "for i in jc.progress(range(3), desc='outer'):\n"
            "    for j in jc.progress(range(5), desc=f'inner {i}', leave=False):\n        pass"
        )
    ]
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    shown = [
        o.data["text/plain"]
        for o in nb.cells[0].outputs
        if o.output_type == "display_data" and o.data["text/plain"]
    ]
    assert len(shown) == 1 and shown[0].startswith("outer: 100%|") and "3/3" in shown[0], nb.cells[0].outputs
