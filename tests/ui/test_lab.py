"""JupyterLab + the extension in a real Chromium: stop buttons work while the cell is busy."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.kernel import wait_gone
from tests.helpers.lab import LabServer, NotebookPage
from tests.helpers.procs import TREE, alive, announced, wait_ready
from tests.helpers.wait import until, until_file

HEAD = "import jupyter_cancel as jc, sys, time\n"


def tree(ready, mode="three", **kw) -> str:
    extra = "".join(f", {k}={v!r}" for k, v in kw.items())
    return f"[sys.executable, {TREE!r}, {mode!r}, {str(ready)!r}]{extra}"


def test_widget_stop_works_while_the_cell_is_busy(lab, page, shots):
    ready = lab.root / "w1"
    name = lab.notebook(
        "widget.ipynb",
        [HEAD + f"op = jc.start({tree(ready)[:-1]}], name='make -j4 (demo tree)')\ntime.sleep(120)"],
    )
    nb = NotebookPage(lab, page, name)
    nb.run(0)
    pids = wait_ready(ready, 3)
    widget = page.locator(".jc-op").first
    widget.wait_for()
    page.wait_for_selector(".jc-op[data-state=running] .jc-op-stop")
    # What the tree costs, sampled while the widget shows: CPU, memory, its 3 processes.
    widget.locator(".jc-op-status", has_text="3 processes").wait_for(timeout=15000)
    assert "CPU " in widget.locator(".jc-op-status").inner_text()
    nb.screenshot(shots / "widget-running.png", nb.cell(0))
    widget.locator(".jc-op-stop").click()
    clicked = time.monotonic()
    page.wait_for_selector(".jc-op[data-state=cancelled]", timeout=15000)
    assert time.monotonic() - clicked < 1.0
    assert wait_gone(pids, timeout=0) == []
    assert "Stopped — by you" in widget.inner_text()
    assert "exit 130" in widget.inner_text()
    widget.locator(".jc-op-status", has_text="CPU s").wait_for()  # its peak memory and CPU time
    # ... in the ended event, and so on the server's /metrics.
    metrics = until(
        lambda: [
            ln
            for ln in lab.http.get("/metrics").text.splitlines()
            if ln.startswith("jupyter_cancel_operation_peak_rss_bytes_count")
        ],
        10,
        "peak RSS on /metrics",
    )
    assert float(metrics[0].split()[-1]) >= 1
    nb.screenshot(shots / "widget-stopped.png", nb.cell(0))


def test_status_bar_says_busy_while_a_widget_cell_runs_in_a_fresh_kernel(lab, page):
    """The widget's comm makes JupyterLab ask the kernel for a subshell (a control request)
    right after it opens; the ``idle`` ending that request turned the status bar to Idle while
    the cell still ran (#14 item 1). Those status messages are now untracked."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    ready = lab.root / "busy"
    # The cell stays busy until its kernel is shut down (no clock: an event nobody sets).
    busy = f"op = jc.start({tree(ready)[:-1]}])\nimport threading\nthreading.Event().wait()"
    name = lab.notebook("busy.ipynb", [HEAD + busy])
    nb = NotebookPage(lab, page, name)
    nb.run(0)
    pids = wait_ready(ready, 3)
    page.locator(".jc-op[data-state=running]").first.wait_for()
    page.wait_for_selector("text=/\\(ipykernel\\) \\| Busy/")
    # On the previous main it flipped to Idle within milliseconds of the widget showing.
    with pytest.raises(PlaywrightTimeout):
        page.wait_for_selector(nb.idle, timeout=3000)
    page.locator(".jc-op-stop").first.click()
    assert wait_gone(pids, timeout=15) == []


def test_toolbar_stops_all_work_of_the_notebook(lab, page):
    a, b = lab.root / "t1", lab.root / "t2"
    name = lab.notebook(
        "toolbar.ipynb", [HEAD + f"bg = jc.start({tree(a)}, display=False)", f"jc.run({tree(b)})"]
    )
    nb = NotebookPage(lab, page, name)
    nb.run(0)
    nb.wait_idle()
    nb.run(1)
    pids = wait_ready(a, 3) + wait_ready(b, 3)
    page.wait_for_selector(".jc-stop-all[data-count='2']")
    # The count badge shows its digit whole: not clipped by the badge or by the button.
    fit = page.evaluate(
        """() => {
          const badge = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jc-badge');
          const button = badge.closest('button');
          const b = badge.getBoundingClientRect(), p = button.getBoundingClientRect();
          return {text: badge.textContent, sw: badge.scrollWidth, cw: badge.clientWidth,
                  sh: badge.scrollHeight, ch: badge.clientHeight, inside: b.left >= p.left - 0.5
                  && b.right <= p.right + 0.5 && b.top >= p.top - 0.5 && b.bottom <= p.bottom + 0.5,
                  bsw: button.scrollWidth, bcw: button.clientWidth, w: b.width, h: b.height};
        }"""
    )
    assert fit["text"] == "2" and fit["sw"] <= fit["cw"] and fit["sh"] <= fit["ch"], fit
    assert fit["inside"] and fit["bsw"] <= fit["bcw"] and fit["w"] >= fit["h"] * 0.9, fit
    page.locator(".jc-stop-all button").click()
    assert wait_gone(pids, timeout=10) == []
    page.wait_for_selector(".jc-stop-all[data-count='0']")


def test_closing_a_notebook_kills_its_work_not_the_others(lab, browser, page):
    mine, theirs = lab.root / "c1", lab.root / "c2"
    n1 = lab.notebook("close1.ipynb", [HEAD + f"op = jc.start({tree(mine)}, display=False)"])
    n2 = lab.notebook("close2.ipynb", [HEAD + f"op = jc.start({tree(theirs)}, display=False)"])
    other_context = browser.new_context()
    other = other_context.new_page()
    try:
        nb1 = NotebookPage(lab, page, n1)
        nb1.run(0)
        nb2 = NotebookPage(lab, other, n2)
        nb2.run(0)
        p1, p2 = wait_ready(mine, 3), wait_ready(theirs, 3)
        # Close the notebook's document tab in Lab (the server's grace here is 30 s: only
        # the extension's immediate signal can make this fast).
        page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabCloseIcon").click()
        page.locator(".jp-Dialog button", has_text="Discard").click()  # "save your work?"
        assert wait_gone(p1, timeout=10) == []
        assert [p for p in p2 if alive(p)] == p2
        # Closing the whole browser tab: the beacon.
        other.close(run_before_unload=True)
        assert wait_gone(p2, timeout=10) == []
    finally:
        other_context.close()


def test_rerun_of_a_busy_cell_leaves_one_live_copy_and_runs(lab, page):
    ready = lab.root / "r1"
    name = lab.notebook("rerun.ipynb", [HEAD + f"jc.run({tree(ready, 'child')})"])
    nb = NotebookPage(lab, page, name)
    nb.run(0)
    (first,) = wait_ready(ready, 1)
    nb.run(0)  # Shift+Enter again while the cell is busy
    pids = wait_ready(ready, 2)
    second = pids[1]
    assert wait_gone([first], timeout=0) == []
    assert alive(second), "the re-run was aborted instead of executed"
    live = [o for o in lab.operations() if o["state"] == "running"]
    assert len(live) == 1 and live[0]["pids"] and second in live[0]["pids"]
    cancelled = [o for o in lab.operations() if o["state"] == "cancelled"]
    assert [o["reason"] for o in cancelled] == ["cell_rerun"]


def test_panel_lists_operations_live_and_stops_them(lab, page, shots):
    ready = lab.root / "p1"
    name = lab.notebook(
        "panel.ipynb", [HEAD + f"op = jc.start({tree(ready)}, display=False, name='llama-server (demo)')"]
    )
    nb = NotebookPage(lab, page, name)
    page.locator(".jp-SideBar [data-id='jupyter-cancel-panel']").click()
    nb.run(0)
    pids = wait_ready(ready, 3)
    row = page.locator(".jc-row.jc-state-running", has_text="llama-server (demo)")
    row.wait_for()
    # While the panel is open its running rows say what their trees cost now (asked of the kernel).
    row.locator(".jc-row-meta", has_text=re.compile(r"CPU \d+%, [\d.]+ MiB, 3 processes")).wait_for()
    nb.screenshot(shots / "panel.png")
    row.locator(".jc-row-stop").click()
    assert wait_gone(pids, timeout=10) == []
    page.locator(".jc-row.jc-state-cancelled", has_text="llama-server (demo)").wait_for()


AXE = Path(__file__).resolve().parents[2] / "labextension" / "node_modules" / "axe-core" / "axe.min.js"


def _axe_violations(page, selector: str) -> list[str]:
    """axe-core's serious and critical findings in ``selector`` (a labextension dev dependency)."""
    if not AXE.exists():
        pytest.fail(f"AXE-CORE IS NOT INSTALLED ({AXE}): run jlpm install in labextension/")
    page.add_script_tag(path=str(AXE))
    found = page.evaluate(
        "async (sel) => (await axe.run(document.querySelector(sel))).violations"
        ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
        ".map(v => v.id + ': ' + v.help + ' — ' + v.nodes.map(n => n.html).join(' | ').slice(0, 300))",
        selector,
    )
    return list(found)


def test_panel_names_the_notebook_and_cell_filters_clears_and_updates_rows_in_place(lab, page, shots):
    """#14 item 3: a row says which notebook and cell; All / Running / Ended; Clear ended; an
    event changes its row in place (the same element), the Stop button never hides the name."""
    ready = lab.root / "p3"
    long_name = "a long running server with a name longer than the panel is wide (demo)"
    name = lab.notebook(
        "panel3.ipynb",
        [
            "print('cell one')",
            HEAD
            + f"op = jc.start({tree(ready)}, display=False, name={long_name!r})\n"
            + "done = jc.start(['echo', 'hello from the tail'], display=False, name='panel-short')",
        ],
    )
    nb = NotebookPage(lab, page, name)
    page.locator(".jp-SideBar [data-id='jupyter-cancel-panel']").click()
    nb.run(0)
    nb.wait_idle()
    nb.run(1)
    pids = wait_ready(ready, 3)
    row = page.locator(".jc-row.jc-state-running", has_text="a long running server")
    row.wait_for()
    assert "panel3.ipynb · cell 2" in row.locator(".jc-row-meta").inner_text()
    page.locator(".jc-group", has_text="panel3.ipynb").wait_for()  # grouped under its notebook
    name_box = row.locator(".jc-row-name").bounding_box()
    stop_box = row.locator(".jc-row-stop").bounding_box()
    assert name_box["x"] + name_box["width"] <= stop_box["x"] + 0.5, (name_box, stop_box)
    short = page.locator(".jc-row.jc-state-completed", has_text="panel-short")
    short.wait_for()
    short.locator(".jc-row-expand").click()  # its latest output, asked of its kernel
    short.locator(".jc-row-tail", has_text="hello from the tail").wait_for()
    page.select_option(".jc-panel-filter", "running")
    short.wait_for(state="detached")
    assert row.count() == 1
    page.select_option(".jc-panel-filter", "ended")
    short.wait_for()
    assert row.count() == 0
    page.select_option(".jc-panel-filter", "all")
    handle = row.element_handle()
    page.locator(".jc-panel-clear").click()
    short.wait_for(state="detached")
    nb.screenshot(shots / "panel-rows.png", page.locator(".jc-panel"))
    assert _axe_violations(page, ".jc-panel") == []
    row.locator(".jc-row-stop").click()
    assert wait_gone(pids, timeout=10) == []
    page.locator(".jc-row.jc-state-cancelled", has_text="a long running server").wait_for()
    # The same element, updated in place (not the list re-rendered), with the cancel latency.
    assert handle.evaluate("e => e.isConnected && e.classList.contains('jc-state-cancelled')")
    assert " ms · " in handle.inner_text() and "by you" in handle.inner_text()


def test_status_bar_count_opens_the_panel_and_the_stop_commands_work(lab, page):
    """'N running' in the status bar opens the panel; "Stop This Notebook's Work" has a
    shortcut (Ctrl+Alt+.) and, with "Stop All Work", a place in the Command Palette."""
    ready = lab.root / "cmd"
    name = lab.notebook(
        "commands.ipynb", [HEAD + f"op = jc.start({tree(ready)}, display=False, name='by-shortcut')"]
    )
    nb = NotebookPage(lab, page, name)
    nb.run(0)
    pids = wait_ready(ready, 3)
    status = page.locator(".jc-status[data-count='1']")
    status.wait_for()
    assert status.inner_text() == "1 running"
    status.click()
    page.locator(".jc-panel .jc-row.jc-state-running", has_text="by-shortcut").wait_for()
    nb.wait_idle()
    nb.cell(0).locator(".jp-InputArea-prompt").click()  # command mode in the notebook
    page.keyboard.press("Control+Alt+Period")
    assert wait_gone(pids, timeout=10) == []
    page.locator(".jc-status[data-count='0']").wait_for()
    page.keyboard.press("Control+Shift+C")  # the Command Palette
    page.locator(".lm-CommandPalette-input").fill("Stop All Work")
    page.locator(".lm-CommandPalette-item", has_text="Stop All Work (Every Kernel)").wait_for()
    page.keyboard.press("Escape")


def _use_theme(page, theme: str) -> None:
    """Switch JupyterLab's theme from the Command Palette and wait until it applies."""
    page.keyboard.press("Control+Shift+C")
    page.locator(".lm-CommandPalette-input").fill(f"Use Theme: {theme}")
    page.locator(".lm-CommandPalette-item", has_text=theme).first.click()
    light = "false" if "Dark" in theme else "true"
    page.wait_for_selector(f"body[data-jp-theme-light='{light}']", state="attached")


def test_dark_theme_panel_and_progress_read_well(lab, page, shots):
    """#14: the panel, its live figures and the progress widget in JupyterLab Dark — theme
    variables only, so axe-core's contrast check (and the rest) finds nothing serious."""
    ready = lab.root / "dark"
    name = lab.notebook(
        "dark.ipynb",
        [
            HEAD + f"op = jc.start({tree(ready)}, display=False, name='llama-server (demo)')",
            HEAD
            + "for i in jc.progress(range(100000), desc='embedding', unit='doc'):\n    sum(range(200000))",
        ],
    )
    nb = NotebookPage(lab, page, name)
    _use_theme(page, "JupyterLab Dark")
    try:
        page.locator(".jp-SideBar [data-id='jupyter-cancel-panel']").click()
        nb.run(0)
        pids = wait_ready(ready, 3)
        nb.run(1)
        page.wait_for_function(
            "() => { const c = document.querySelector('.jc-op-count'); return c && parseFloat(c.textContent) >= 5; }"
        )
        row = page.locator(".jc-row.jc-state-running", has_text="llama-server (demo)")
        row.locator(".jc-row-meta", has_text="3 processes").wait_for()
        nb.screenshot(shots / "dark.png")
        nb.screenshot(shots / "progress-dark.png", nb.cell(1))
        nb.screenshot(shots / "panel-dark.png", page.locator(".jc-panel"))
        assert _axe_violations(page, ".jc-panel") == []
        assert _axe_violations(page, ".jc-op") == []
        page.locator(".jc-op-stop").first.click()
        page.wait_for_selector(".jc-op[data-state=cancelled]", timeout=15000)
        row.locator(".jc-row-stop").click()
        assert wait_gone(pids, timeout=10) == []
        page.locator(".jc-row.jc-state-cancelled", has_text="llama-server (demo)").wait_for()
    finally:
        _use_theme(page, "JupyterLab Light")  # the theme is a user setting: the next tests' pages


def test_progress_shows_progress_and_stops_on_click(lab, page, shots):
    name = lab.notebook(
        "progress.ipynb",
        [HEAD + "for i in jc.progress(range(2000), desc='embedding'):\n    time.sleep(0.05)"],
    )
    nb = NotebookPage(lab, page, name)
    nb.run(0)
    widget = page.locator(".jc-op").first
    widget.wait_for()
    page.wait_for_function(
        "() => { const c = document.querySelector('.jc-op-count'); return c && parseFloat(c.textContent) >= 5; }"
    )
    nb.screenshot(shots / "progress-running.png", nb.cell(0))
    count = widget.locator(".jc-op-count").inner_text()
    assert "it/s" in count  # elapsed<ETA, rate (as tqdm)
    assert re.search(r"\d+ / 2000 \(\d+%\)", count), count  # the share done, as a percentage
    widget.locator(".jc-op-stop").click()
    page.wait_for_selector(".jc-op[data-state=cancelled]", timeout=15000)
    nb.wait_idle()
    assert "Stopped: embedding — by you" in nb.cell(0).inner_text()
    # A progress loop has no process: no exit code (it used to say "exit 130").
    status = widget.locator(".jc-op-status").inner_text()
    assert status.startswith("Stopped — ") and "exit" not in status, status


def test_nested_progress_bars_the_inner_ones_go_when_done(lab, page):
    """``leave=False`` (tqdm's nesting): each completed inner bar hides; the outer one stays."""
    name = lab.notebook(
        "nested.ipynb",
        [
            HEAD + "for i in jc.progress(range(3), desc='outer'):\n"
            "    for j in jc.progress(range(4), desc=f'inner {i}', leave=False):\n        sum(range(1000))"
        ],
    )
    nb = NotebookPage(lab, page, name)
    nb.run(0)
    page.locator(".jc-op[data-state=completed]", has_text="outer").wait_for()
    nb.wait_idle()
    visible = page.locator(".jc-op:visible")
    assert visible.count() == 1 and "outer" in visible.first.inner_text()
    assert page.locator(".jc-op", has_text="inner").count() == 3  # there, hidden


def test_demo_build_notebook_progress_and_stop(lab, page, shots):
    """The README's story: open the build demo, watch make -j4 progress, stop it mid-build."""
    import shutil
    from pathlib import Path

    demo = Path(__file__).resolve().parents[2] / "notebooks"
    shutil.copy(demo / "01-build-you-can-stop.ipynb", lab.root / "build-demo.ipynb")
    shutil.copy(demo / "demo_support.py", lab.root / "demo_support.py")
    nb = NotebookPage(lab, page, "build-demo.ipynb")
    nb.run(1)  # generate the project
    nb.wait_idle(60000)
    nb.run(2)  # make clean; make -j4
    widget = page.locator(".jc-op", has_text="make -j4").first
    widget.wait_for()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jc-op-count')].some(c => parseFloat(c.textContent) >= 3)",
        timeout=60000,
    )
    nb.screenshot(shots / "build-running.png", nb.cell(2))
    widget.locator(".jc-op-stop").click()
    page.wait_for_selector(".jc-op[data-state=cancelled]", timeout=15000)
    nb.wait_idle()
    ops = [o for o in lab.operations() if o["name"] == "make -j4"]
    assert ops and ops[-1]["state"] == "cancelled" and ops[-1]["pids"] == []
    assert "Stopped: make -j4 — by you" in nb.cell(2).inner_text()
    nb.screenshot(shots / "build-stopped.png", nb.cell(2))


def test_notebook7_widget_stop_and_toolbar(lab, page):
    """The same extension in Notebook 7's notebook view (/notebooks/...)."""
    ready = lab.root / "n7"
    name = lab.notebook(
        "nb7.ipynb", [HEAD + f"op = jc.start({tree(ready)[:-1]}], name='nb7 tree')\ntime.sleep(120)"]
    )
    page.goto(f"{lab.url}/notebooks/{name}?token={lab.token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60000)
    page.wait_for_selector(".jc-stop-all")  # our toolbar button is there
    until(  # this notebook's own kernel (kernels of earlier tests may be idle too)
        lambda: [
            s
            for s in lab.http.get("/api/sessions").json()
            if s["path"].endswith(name) and s["kernel"]["execution_state"] == "idle"
        ],
        60,
        "the notebook's kernel became idle",
    )
    page.locator(".jp-Notebook .jp-Cell").first.locator(".jp-InputArea-prompt").click()
    page.keyboard.press("Shift+Enter")
    pids = wait_ready(ready, 3, timeout=30)
    page.wait_for_selector(".jc-op[data-state=running] .jc-op-stop").click()
    page.wait_for_selector(".jc-op[data-state=cancelled]", timeout=15000)
    assert wait_gone(pids) == []
    # The Running work panel is there too: from the Command Palette, in Notebook 7's left area.
    page.keyboard.press("Escape")
    page.keyboard.press("Control+Shift+C")
    page.locator(".lm-CommandPalette-input").fill("Show Running Work")
    page.locator(".lm-CommandPalette-item[data-command='jupyter-cancel:open-panel']").click()
    page.locator(".jc-panel .jc-row.jc-state-cancelled", has_text="nb7 tree").wait_for()


def test_stop_button_scope_session_stops_only_this_notebooks_work(lab, page):
    """Lab setting stopButtonScope = 'session': the toolbar's Stop work ends what this notebook
    started, not what another client started on the same kernel."""
    import asyncio
    import concurrent.futures
    import json
    import uuid

    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    from tests.helpers.server import Client

    settings = "/lab/api/settings/jupyter-cancel:plugin"
    lab.http.put(settings, json={"raw": json.dumps({"stopButtonScope": "session"})}).raise_for_status()
    try:
        mine, theirs = lab.root / "s1", lab.root / "s2"
        name = lab.notebook("scope.ipynb", [HEAD + f"op = jc.start({tree(mine)}, display=False)"])
        nb = NotebookPage(lab, page, name)
        nb.run(0)
        p1 = wait_ready(mine, 3)
        kernel = {"id": lab.kernel_of(name)}

        async def other_client() -> None:
            url = f"{lab.url.replace('http', 'ws')}/api/kernels/{kernel['id']}/channels?session_id={uuid.uuid4()}"
            ws = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {lab.token}"}))
            c = Client(ws, url.rsplit("=", 1)[1])
            r = await c.execute(HEAD + f"theirs = jc.start({tree(theirs)}, display=False)", cell="other")
            assert r["reply"]["status"] == "ok", r
            c.close()
            while await asyncio.wait_for(c.ws.read_message(), 10) is not None:
                pass  # until the close completed

        # Playwright's sync API owns this thread's event loop: the other client gets its own.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, other_client()).result(timeout=120)
        p2 = wait_ready(theirs, 3)
        # The kernel runs two operations; the badge counts this notebook's one.
        until(lambda: len([o for o in lab.operations() if o["state"] == "running"]) == 2, 30, "both run")
        page.wait_for_selector(".jc-stop-all[data-count='1']")
        page.locator(".jc-stop-all button").click()
        assert wait_gone(p1, timeout=10) == []
        assert [p for p in p2 if alive(p)] == p2, "another client's work was stopped"
        r = lab.http.post(f"/jupyter-cancel/api/kernels/{kernel['id']}/cancel", json={})
        assert len(r.json()["cancelled"]) == 1 and wait_gone(p2, timeout=10) == []
    finally:
        lab.http.put(settings, json={"raw": "{}"}).raise_for_status()


def test_cancel_on_close_off_keeps_a_closed_notebooks_work(lab, page):
    """Lab setting cancelOnClose = false: closing the notebook sends no close signal, its work
    keeps running (the server's own grace for lost clients still applies, 30 s here)."""
    import json

    settings = "/lab/api/settings/jupyter-cancel:plugin"
    lab.http.put(settings, json={"raw": json.dumps({"cancelOnClose": False})}).raise_for_status()
    sent = []
    page.on(
        "request",
        lambda r: (
            sent.append(r.url) if "/jupyter-cancel/api/clients/" in r.url and "/closed" in r.url else None
        ),
    )
    try:
        ready = lab.root / "keep"
        name = lab.notebook("keep.ipynb", [HEAD + f"op = jc.start({tree(ready)}, display=False)"])
        nb = NotebookPage(lab, page, name)
        nb.run(0)
        pids = wait_ready(ready, 3)
        page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabCloseIcon").click()
        page.locator(".jp-Dialog button", has_text="Discard").click()
        page.wait_for_selector(".jp-NotebookPanel", state="detached")
        # The close handler runs as the panel is disposed: a request it made is recorded by now.
        page.evaluate("() => fetch(location.href, {method: 'HEAD'}).then(r => r.status)")
        assert sent == [] and [p for p in pids if alive(p)] == pids
        kernel = {"id": lab.kernel_of(name)}
        r = lab.http.post(f"/jupyter-cancel/api/kernels/{kernel['id']}/cancel", json={})
        assert len(r.json()["cancelled"]) == 1 and wait_gone(pids, timeout=10) == []
    finally:
        lab.http.put(settings, json={"raw": "{}"}).raise_for_status()


def test_stop_before_rerun_off_queues_the_rerun_as_stock_jupyter_does(lab, page):
    """Lab setting stopBeforeRerun = false: Shift+Enter on a busy cell sends the execute
    request without a stop first; the new run waits behind the old one."""
    import json

    settings = "/lab/api/settings/jupyter-cancel:plugin"
    lab.http.put(settings, json={"raw": json.dumps({"stopBeforeRerun": False})}).raise_for_status()
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: frames.append(str(payload))))
    try:
        ready = lab.root / "queued"
        name = lab.notebook("queued.ipynb", [HEAD + f"jc.run({tree(ready, 'child')})"])
        nb = NotebookPage(lab, page, name)
        nb.run(0)
        (first,) = wait_ready(ready, 1)
        nb.run(0)  # again, while busy
        until(lambda: sum('"execute_request"' in f for f in frames) >= 2, 30, "the re-run was sent")
        assert not [f for f in frames if "jupyter_cancel_request" in f], "a stop was sent first"
        assert alive(first)
        kernel = {"id": lab.kernel_of(name)}
        cancel = f"/jupyter-cancel/api/kernels/{kernel['id']}/cancel"
        lab.http.post(cancel, json={}).raise_for_status()
        assert wait_gone([first], timeout=10) == []
        # The old run raised Cancelled, so ipykernel aborts the queued one (stop_on_error), as stock.
        nb.wait_idle()
        assert announced(ready) == [first]
    finally:
        lab.http.put(settings, json={"raw": "{}"}).raise_for_status()


def _runs(path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_rerun_of_a_busy_python_loop_starts_the_new_run_other_work_lives(lab, page, shots):
    """Shift+Enter on a cell busy in a `while True` loop: the old run gets Cancelled (one line),
    the new run starts; another cell's jc.start tree is untouched. Then the cell toolbar's
    Stop and the panel's running-cell row stop it too."""
    ready, runs = lab.root / "bg-tree", lab.root / "loop-runs"
    name = lab.notebook(
        "loop.ipynb",
        [
            HEAD + f"bg = jc.start({tree(ready)}, display=False)",
            f"open({str(runs)!r}, 'a').write('run\\n')\nn = 0\nwhile True:\n    n += 1",
        ],
    )
    nb = NotebookPage(lab, page, name)
    nb.run(0)
    bg = wait_ready(ready, 3)
    nb.run(1)
    until_file(runs, lambda: _runs(runs) == 1, 60, "first run")
    nb.run(1)  # Shift+Enter again while busy
    until_file(runs, lambda: _runs(runs) == 2, 30, "the re-run started")
    assert [p for p in bg if alive(p)] == bg, "another cell's work was stopped"
    # The cell toolbar's Stop (the cell is active after Shift+Enter moved on: select it again).
    nb.cell(1).locator(".jp-InputArea-prompt").click()
    button = nb.cell(1).locator(".jp-cell-toolbar [data-command='jupyter-cancel:stop-cell']")
    nb.screenshot(shots / "cell-stop-toolbar.png")
    button.click()
    stopped = nb.cell(1).locator(".jp-OutputArea-output", has_text="Stopped: this cell")
    stopped.wait_for()
    # A stop the user asked for reads as a notice, not in the error box a failure gets.
    page.locator(".jc-stop-output", has_text="Stopped: this cell").wait_for()
    assert _background(stopped) == "rgba(0, 0, 0, 0)", _background(stopped)
    nb.wait_idle()
    assert [p for p in bg if alive(p)] == bg
    # The running cell's row in the panel.
    nb.run(1)
    until_file(runs, lambda: _runs(runs) == 3, 30, "third run")
    page.locator(".jp-SideBar [title='Running work (jupyter_cancel)']").click()
    row = page.locator(".jc-cell-row", has_text="loop.ipynb")
    row.locator(".jc-cell-stop").click()
    nb.wait_idle()
    assert [p for p in bg if alive(p)] == bg
    lab.http.post(f"/jupyter-cancel/api/operations/{lab.operations()[0]['id']}/cancel", json={})
    assert wait_gone(bg, timeout=10) == []


def test_panel_tells_the_running_cell_from_the_queued_ones_and_stops_a_queued_one(lab, page, shots):
    """Lab marks every cell it sent as running ([*]); the panel says which one the kernel runs
    (its iopub busy/idle), lists the others as queued, each with a Stop: a queued cell stopped
    there is skipped when the kernel reaches it, the one behind it runs."""
    ready, release = lab.root / "queued-ready", lab.root / "queued-release"
    os.mkfifo(release)  # the first cell blocks reading it until the test writes
    name = lab.notebook(
        "queued.ipynb",
        [
            f"import pathlib\npathlib.Path({str(ready)!r}).write_text('1')\nopen({str(release)!r}).read()",
            "print('one')",
            "print('two')",
        ],
    )
    nb = NotebookPage(lab, page, name)
    page.locator(".jp-SideBar [data-id='jupyter-cancel-panel']").click()
    nb.run(0)
    until_file(ready, ready.exists, 30, "the first cell runs")
    nb.run(1)
    nb.run(2)
    running = page.locator(".jc-cell-row.jc-state-running")
    queued = page.locator(".jc-cell-row.jc-cell-queued")
    queued.nth(1).wait_for()
    assert running.count() == 1 and "cell 1 · queued.ipynb" in running.inner_text()
    assert queued.count() == 2 and queued.locator(".jc-cell-stop").count() == 2
    assert "cell 2 · queued.ipynb (queued)" in queued.nth(0).inner_text()
    assert "before it starts" in (queued.nth(0).locator(".jc-cell-stop").get_attribute("aria-label") or "")
    queued.nth(0).locator(".jc-cell-stop").click()
    page.locator(".jc-cell-row", has_text="cell 2 · queued.ipynb (will be skipped)").wait_for()
    nb.screenshot(shots / "panel-queued-stop.png", page.locator(".jc-panel"))
    release.write_text("go")
    nb.cell(1).locator(".jp-OutputArea-output", has_text="Stopped before it ran").wait_for()
    nb.cell(2).locator(".jp-OutputArea-output", has_text="two").wait_for()
    nb.wait_idle()
    assert "one" not in nb.cell(1).locator(".jp-OutputArea").inner_text()
    page.locator(".jc-cell-row").first.wait_for(state="detached")


def test_run_all_then_stop_a_queued_cell_skips_it_and_runs_its_neighbours(lab, page, shots):
    """Run All over five cells; the third is stopped from its toolbar while the first runs:
    the third never runs (one line says so), the others run as queued."""
    ready, release, ran = lab.root / "runall-ready", lab.root / "runall-release", lab.root / "runall-ran"
    os.mkfifo(release)  # the first cell blocks reading it until the test writes
    first = f"import pathlib\npathlib.Path({str(ready)!r}).write_text('1')\nopen({str(release)!r}).read()"
    others = [f"open({str(ran)!r}, 'a').write('{i}\\n')" for i in range(1, 5)]
    nb = NotebookPage(lab, page, lab.notebook("runall.ipynb", [first, *others]))
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    until_file(ready, ready.exists, 60, "the first cell runs")
    nb.cell(2).locator(".jp-InputArea-prompt").click()
    nb.cell(2).locator(".jp-cell-toolbar [data-command='jupyter-cancel:stop-cell']").click()
    page.locator(".jp-Cell.jc-cell-skipped").wait_for()  # the kernel answered: it will skip it
    release.write_text("go")
    nb.cell(2).locator(".jp-OutputArea-output", has_text="Stopped before it ran").wait_for()
    nb.wait_idle()
    until_file(ran, lambda: ran.read_text().split() == ["1", "3", "4"], 30, "cells 1, 3 and 4 ran")
    assert page.locator(".jp-Cell.jc-cell-skipped").count() == 0  # passed by: no longer dimmed
    nb.screenshot(shots / "run-all-queued-stop.png")


def test_rerun_of_a_cell_reading_an_openai_stream_disconnects_it(lab, page):
    from jupyter_cancel.llm.devserver import DevServer

    server = DevServer(delay=0.05, tokens=100000).start_background()
    try:
        runs = lab.root / "stream-runs"
        code = (
            "from openai import OpenAI\n"
            f"client = OpenAI(base_url={server.url!r}, api_key='x', max_retries=0)\n"
            f"open({str(runs)!r}, 'a').write('run\\n')\n"
            "stream = client.chat.completions.create(model='demo', "
            "messages=[{'role': 'user', 'content': 'hi'}], stream=True)\n"
            "for chunk in stream:\n    pass\n"
        )
        nb = NotebookPage(lab, page, lab.notebook("stream.ipynb", [code]))
        nb.run(0)
        assert server.wait_for("streams", 1, 60)
        nb.run(0)
        assert server.wait_for("disconnects", 1, 30), server.stats()
        assert server.wait_for("streams", 2, 30), "the re-run did not start its stream"
        # The new run shows as running ([*]), not as an idle cell (`[ ]`).
        nb.cell(0).locator(".jp-InputPrompt", has_text="[*]").wait_for()
        nb.cell(0).locator(".jp-InputArea-prompt").click()
        nb.cell(0).locator(".jp-cell-toolbar [data-command='jupyter-cancel:stop-cell']").click()
        assert server.wait_for("disconnects", 2, 30), server.stats()
        nb.wait_idle()
    finally:
        server.shutdown()
        server.server_close()


def test_a_cell_stuck_after_stop_is_reported_with_the_interrupt_offered(lab, page):
    # SIGINT blocked in the main thread stands for C code that never returns to Python.
    marker, release = lab.root / "stuck-in", lab.root / "stuck-release"
    os.mkfifo(release)  # a read that returns only when the test writes: no polling loop
    code = (
        "import signal, os, time\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})\n"
        f"open({str(marker)!r}, 'w').write('in')\n"
        f"open({str(release)!r}).read()  # blocks until the test writes\n"
        "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})\nprint('after')\n"
    )
    nb = NotebookPage(lab, page, lab.notebook("stuck.ipynb", [code]))
    nb.run(0)
    until_file(marker, marker.exists, 60, "cell running")
    nb.cell(0).locator(".jp-InputArea-prompt").click()
    nb.cell(0).locator(".jp-cell-toolbar [data-command='jupyter-cancel:stop-cell']").click()
    toast = page.locator(".Toastify__toast", has_text="still running")
    toast.wait_for()
    assert toast.locator("button", has_text="Interrupt kernel").count() == 1
    page.locator(".jp-SideBar [title='Running work (jupyter_cancel)']").click()
    page.locator(".jc-cell-row .jc-cell-interrupt").wait_for()
    release.write_text("go")
    nb.cell(0).locator(".jp-OutputArea-output", has_text="Stopped: this cell").wait_for()
    assert "after" not in nb.cell(0).locator(".jp-OutputArea").inner_text()


def test_panel_stops_a_bash_kernels_background_job(lab, page, shots):
    """A kernel without the kernel extension (bash_kernel): its background jobs are listed in
    the panel as kernel-level rows, and a row's Stop ends that job's whole tree."""
    from tests.helpers.foreign import installed

    if "bash" not in installed():
        pytest.skip("KERNEL NOT INSTALLED: bash_kernel (scripts/setup.sh installs it)")
    ready = lab.root / "bash-job"
    name = lab.notebook(
        "bash-job.ipynb",
        [f"{sys.executable} {TREE} setsid {ready} &\necho started"],
        kernel=("bash", "Bash", "bash"),
    )
    nb = NotebookPage(lab, page, name, kernel_label="Bash")
    page.locator(".jp-SideBar [data-id='jupyter-cancel-panel']").click()
    nb.run(0)
    pids = wait_ready(ready, 3)
    row = page.locator(".jc-row.jc-state-running", has_text=f"{TREE} setsid")
    row.first.wait_for(timeout=30000)
    assert "kernel-level" in row.first.inner_text()
    nb.screenshot(shots / "panel-bash-kernel.png")
    assert row.count() == 1, "one row for the job's whole tree (its setsid grandchild included)"
    row.first.locator(".jc-row-stop").click()
    assert wait_gone(pids, timeout=10) == []
    page.locator(".jc-row.jc-state-cancelled", has_text=f"{TREE} setsid").first.wait_for()
    nb.run(0)  # the kernel itself was left alone: it runs the cell again
    wait_ready(ready, 6)
    # The page fixture shuts the kernel down once the page is closed (shut down under an open
    # page, Lab may start a new kernel for it); the leak check then sees this job ended.


def test_a_notebooks_own_load_ext_prints_nothing(lab, page):
    """The server loads the kernel extension itself; the demo notebooks (and users) still
    start with ``%load_ext jupyter_cancel``: it must not print "already loaded"."""
    name = lab.notebook("loadext.ipynb", ["%load_ext jupyter_cancel\nprint('loaded-ok')"])
    nb = NotebookPage(lab, page, name)
    nb.run(0)
    nb.cell(0).locator(".jp-OutputArea-output", has_text="loaded-ok").wait_for(timeout=30000)
    assert "already loaded" not in nb.cell(0).locator(".jp-OutputArea").inner_text()


#: The reload test's grace (seconds): a reload on a busy machine fits in it.
RELOAD_GRACE = 20


@pytest.fixture
def reload_lab(tmp_path_factory):
    """A server of its own whose ``reload_grace`` outlasts a slow reload: JupyterLab reopening
    a notebook on a busy machine (the end of a CI run) took longer than the default 3 s."""
    server = LabServer(tmp_path_factory.mktemp("reload-lab"), f"--JupyterCancel.reload_grace={RELOAD_GRACE}")
    yield server
    server.stop()


def test_reload_keeps_running_work_and_closing_the_tab_ends_it(reload_lab, browser):
    """A browser cannot tell a reload from a close as the page unloads: the page's beacon
    names its notebook, and a page reopening that notebook on the same kernel within
    ``reload_grace`` takes the work over (#14 item 9); a real close ends it once that passed."""
    lab = reload_lab
    ready = lab.root / "reload"
    name = lab.notebook("reload.ipynb", [HEAD + f"op = jc.start({tree(ready)}, display=False)"])
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    try:
        nb = NotebookPage(lab, page, name)
        nb.run(0)
        pids = wait_ready(ready, 3)
        (op,) = until(
            lambda: [o for o in lab.operations() if o["name"].endswith(f"{ready}")], 30, "the operation"
        )
        page.reload()  # F5: the reloaded Lab reopens the notebook on the same kernel
        page.wait_for_selector(nb.idle, timeout=60000)
        moved = until(
            lambda: [
                o
                for o in lab.operations()
                if o["id"] == op["id"] and o["client_session"] != op["client_session"]
            ],
            30,
            "the reloaded page took the work over",
        )
        assert moved[0]["state"] == "running"
        assert [p for p in pids if alive(p)] == pids
        page.close(run_before_unload=True)  # closing the tab: its beacon, then the reload grace
        assert wait_gone(pids, timeout=RELOAD_GRACE + 40) == []
        (ended,) = [o for o in lab.operations() if o["id"] == op["id"]]
        assert (ended["state"], ended["reason"]) == ("cancelled", "tab_closed")
    finally:
        context.close()
        lab.shutdown_kernels()  # after the page is gone (as the page fixture does)


def _background(locator) -> str:
    return locator.evaluate("node => getComputedStyle(node).backgroundColor")


def test_an_interrupted_cells_traceback_ends_in_the_users_code(lab, page):
    """The toolbar's interrupt (■) during a busy loop: the traceback JupyterLab shows is the
    user's alone — its last frame is the cell's line, no frame of jupyter_cancel's."""
    ready = lab.root / "tb-ready"
    name = lab.notebook(
        "traceback.ipynb", [f"open({str(ready)!r}, 'w').write('in')\nwhile True:\n    sum(range(1000))"]
    )
    nb = NotebookPage(lab, page, name)
    nb.run(0)
    until_file(ready, ready.exists, 60, "the cell runs")
    page.locator(".jp-NotebookPanel:visible .jp-Toolbar [data-command='notebook:interrupt-kernel']").click()
    error = nb.cell(0).locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    error.wait_for()
    text = error.inner_text()
    assert "KeyboardInterrupt" in text, text
    # A stock interrupt stays an error: its error box, not the stop's notice.
    assert (
        _background(error) != "rgba(0, 0, 0, 0)"
        and not error.locator("xpath=ancestor::*[contains(@class, 'jc-stop-output')]").count()
    )
    assert "jupyter_cancel" not in text and "extension.py" not in text, text
    frames = [line for line in text.splitlines() if line.startswith(("Cell In", "File "))]
    assert frames and frames[-1].startswith("Cell In"), text
    nb.wait_idle()


def test_cell_stop_shows_on_code_cells_only_and_the_panel_tab_is_told_apart(lab, page):
    """The cell toolbar's Stop (a filled square) is on code cells, not greyed on markdown ones;
    the panel's tab has its own icon and name beside the stock Running tab."""
    name = lab.notebook("cells.ipynb", ["print('code')"])
    nb_path = lab.root / name
    import nbformat

    nb = nbformat.read(nb_path, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("Some *text*"))
    nbformat.write(nb, nb_path)
    notebook = NotebookPage(lab, page, name)
    button = "[data-command='jupyter-cancel:stop-cell']"
    notebook.cell(0).locator(".jp-InputArea-prompt").click()
    notebook.cell(0).locator(f".jp-cell-toolbar {button}").wait_for()
    notebook.cell(1).click()
    markdown_stop = notebook.cell(1).locator(f".jp-cell-toolbar {button}")
    markdown_stop.wait_for(state="hidden")  # absent, or hidden by the toolbar
    tab = page.locator(".jp-SideBar [title='Running work (jupyter_cancel)']")
    assert tab.count() == 1
    assert tab.locator("[data-icon='jupyter-cancel:running-work']").count() == 1


def test_panel_rows_keep_their_notebooks_name_after_its_tab_closes(lab, page):
    """A notebook's tab closed while its kernel runs on (work with policy ``continue``): its
    rows still name the notebook and the cell, not the kernel's and the cell's ids."""
    ready = lab.root / "names"
    name = lab.notebook(
        "names.ipynb", [HEAD + f"op = jc.start({tree(ready)}, display=False, policy='continue', name='kept')"]
    )
    nb = NotebookPage(lab, page, name)
    page.locator(".jp-SideBar [data-id='jupyter-cancel-panel']").click()
    nb.run(0)
    pids = wait_ready(ready, 3)
    row = page.locator(".jc-row.jc-state-running", has_text="kept")
    row.locator(".jc-row-meta", has_text="names.ipynb · cell 1").wait_for()
    page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabCloseIcon").click()
    dialog = page.locator(".jp-Dialog button", has_text="Discard")
    if dialog.count():
        dialog.click()
    page.wait_for_selector(".lm-DockPanel-tabBar .lm-TabBar-tab:has-text('names.ipynb')", state="detached")
    row.locator(".jc-row-meta", has_text="names.ipynb · cell 1 (closed)").wait_for()
    assert "kernel " not in row.locator(".jc-row-meta").inner_text()
    assert [p for p in pids if alive(p)] == pids, "continue work ended with its tab"
    kept = next(o for o in lab.operations() if o["name"] == "kept" and o["state"] == "running")
    lab.http.post(f"/jupyter-cancel/api/operations/{kept['id']}/cancel", json={})
    assert wait_gone(pids, timeout=10) == []
