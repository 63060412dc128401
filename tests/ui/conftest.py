"""One JupyterLab server and one Chromium for the UI tests; each test opens its own notebooks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.lab import CHROME_ARGS, CHROMIUM, LabServer

#: Where screenshots go: a temporary folder, unless JUPYTER_CANCEL_SCREENSHOTS names one
#: (``JUPYTER_CANCEL_SCREENSHOTS=docs/screenshots bash scripts/test.sh tests/ui`` renews the docs' (README and docs/USAGE.md)).
SHOTS = os.environ.get("JUPYTER_CANCEL_SCREENSHOTS")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip("no Chromium (scripts/test.sh installs it with apt-get when run as root)")
    server = LabServer(tmp_path_factory.mktemp("lab"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, lab):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    p = context.new_page()
    p.set_default_timeout(30000)
    yield p
    context.close()
    lab.shutdown_kernels()


@pytest.fixture
def shots(tmp_path_factory):
    folder = Path(SHOTS) if SHOTS else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
