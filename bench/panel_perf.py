"""The Running work panel with 200 live operations across 3 notebooks (not a test): the
browser's long tasks (> 50 ms, PerformanceObserver) while the panel renders them, while the
clock ticks, and while all 200 end at once (200 events, one row each updated in place).

    .venv/bin/python bench/panel_perf.py [--ops 200] [--notebooks 3]

A real JupyterLab (tests/helpers/lab.py) and headless Chromium. Every operation is a
``sleep`` started by ``jc.start(..., display=False)`` in its notebook's kernel.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.helpers.lab import CHROME_ARGS, CHROMIUM, LabServer, NotebookPage  # noqa: E402
from tests.helpers.wait import until  # noqa: E402

OBSERVE = """() => { window.__long = []; new PerformanceObserver(list => {
  for (const e of list.getEntries()) window.__long.push(e.duration); }).observe({type: 'longtask'}); }"""
TAKE = "() => { const l = window.__long; window.__long = []; return l; }"


def phase(page, name: str, action) -> None:
    page.evaluate(TAKE)
    action()
    tasks = page.evaluate(TAKE)
    worst = max(tasks, default=0.0)
    print(f"| {name} | {len(tasks)} | {worst:.0f} ms |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ops", type=int, default=200)
    parser.add_argument("--notebooks", type=int, default=3)
    args = parser.parse_args()
    per = -(-args.ops // args.notebooks)
    with tempfile.TemporaryDirectory() as d:
        lab = LabServer(Path(d))
        try:
            names = [
                lab.notebook(
                    f"load{i}.ipynb",
                    [
                        f"import jupyter_cancel as jc\nops = [jc.start(['sleep', '600'], display=False) for _ in range({per})]"
                    ],
                )
                for i in range(args.notebooks)
            ]
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS)
                # One page per notebook, all kept open (a page that goes away ends its work).
                context = browser.new_context(viewport={"width": 1400, "height": 900})
                notebooks = []
                for name in names:
                    page = context.new_page()
                    page.set_default_timeout(120000)
                    notebooks.append(NotebookPage(lab, page, name))
                page = notebooks[-1].page
                total = per * args.notebooks

                def start_all() -> None:
                    for nb in notebooks:
                        nb.run(0)
                        nb.wait_idle(120000)
                    until(
                        lambda: len([o for o in lab.operations() if o["state"] == "running"]) >= total,
                        60,
                        "all running",
                    )

                def end_all() -> None:
                    page.keyboard.press("Control+Alt+Shift+Period")
                    page.locator(".jc-status[data-count='0']").wait_for()
                    until(
                        lambda: not [o for o in lab.operations() if o["state"] == "running"], 60, "all ended"
                    )

                start_all()
                page.evaluate(OBSERVE)
                print(
                    f"| phase ({total} operations, {args.notebooks} notebooks) | long tasks > 50 ms | longest |"
                )
                print("|---|---|---|")
                phase(page, "baseline — panel closed: all end at once (Stop All Work)", end_all)
                start_all()
                phase(
                    page,
                    "open the panel, render every row",
                    lambda: (
                        page.locator(".jp-SideBar [data-id='jupyter-cancel-panel']").click(),
                        page.locator(".jc-row.jc-state-running").nth(total - 1).wait_for(),
                    ),
                )
                phase(page, "5 clock ticks (elapsed times in place)", lambda: page.wait_for_timeout(5000))
                phase(
                    page,
                    "panel open: all end at once, every row updated",
                    lambda: (
                        end_all(),
                        page.locator(".jc-row.jc-state-running").first.wait_for(state="detached"),
                    ),
                )
                phase(
                    page,
                    "Clear ended",
                    lambda: (
                        page.locator(".jc-panel-clear").click(),
                        page.locator(".jc-row").first.wait_for(state="detached"),
                    ),
                )
                browser.close()
        finally:
            lab.stop()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.helpers.home import private_jupyter_home

    private_jupyter_home("jupyter-cancel-bench-", remove_at_exit=True)  # never the user's home
    main()
