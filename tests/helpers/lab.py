"""A real JupyterLab server (subprocess on 127.0.0.1) and a real Chromium driven by Playwright."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import nbformat

from tests.helpers.server import wait_until_up

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROME_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """JupyterLab (or, with ``module="jupyter_server"``, a plain server) in its own session."""

    def __init__(self, root: Path, *extra: str, module: str = "jupyterlab") -> None:
        self.root = root
        self.port = free_port()
        self.token = uuid.uuid4().hex
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(root / "lab.log", "w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                module,
                "--no-browser",
                "--allow-root",
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={self.port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={root}",
                *(["--LabApp.news_url="] if module == "jupyterlab" else []),
                "--JupyterCancel.tab_close_grace=30",
                *extra,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"token {self.token}"}, timeout=30
        )
        try:
            wait_until_up(self.http, self.proc, 90, module)
        except RuntimeError as err:
            raise RuntimeError(f"{err}: " + (root / "lab.log").read_text()[-3000:]) from None

    def notebook(self, name: str, cells: list[str], kernel: tuple[str, str, str] | None = None) -> str:
        """``kernel``: (name, display name, language) of its kernel spec; python3 by default."""
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
        spec = kernel or ("python3", "Python 3 (ipykernel)", "python")
        nb.metadata["kernelspec"] = dict(zip(("name", "display_name", "language"), spec, strict=True))
        nbformat.write(nb, self.root / name)
        return name

    def operations(self) -> list[dict[str, Any]]:
        return self.http.get("/jupyter-cancel/api/operations").json()["operations"]

    def kernel_of(self, notebook: str) -> str:
        """The id of the kernel notebook ``notebook`` runs on (its session's): never another
        test's kernel that is still shutting down."""
        (kernel_id,) = {
            s["kernel"]["id"] for s in self.http.get("/api/sessions").json() if s.get("path") == notebook
        }
        return str(kernel_id)

    def shutdown_kernels(self) -> None:
        for k in self.http.get("/api/kernels").json():
            self.http.delete(f"/api/kernels/{k['id']}")
        for s in self.http.get("/api/sessions").json():
            self.http.delete(f"/api/sessions/{s['id']}")

    def stop(self) -> None:
        self.shutdown_kernels()
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.http.close()
        self.log.close()


class NotebookPage:
    """One notebook open in Lab."""

    def __init__(self, lab: LabServer, page: Any, name: str, kernel_label: str = "\\(ipykernel\\)") -> None:
        """``kernel_label``: a regular expression for the kernel's name in the status bar."""
        self.lab, self.page, self.name = lab, page, name
        self.idle = f"text=/{kernel_label} \\| Idle/"
        page.goto(f"{lab.url}/lab/tree/{name}?token={lab.token}&reset")
        # Wait for the kernel, not the toolbar (the toolbar says idle before a kernel exists).
        page.wait_for_selector(self.idle, timeout=60000)
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=30000)
        news = page.locator(".jp-toast-button", has_text="No")  # "get Jupyter news?" toast
        if news.count():
            news.first.click()

    def cell(self, index: int) -> Any:
        return self.page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell").nth(index)

    def run(self, index: int) -> None:
        self.cell(index).locator(".jp-InputArea-prompt").click()
        self.page.keyboard.press("Shift+Enter")

    def wait_idle(self, timeout: float = 30000) -> None:
        self.page.wait_for_selector(self.idle, timeout=timeout)

    def screenshot(self, path: Path, locator: Any = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        (locator or self.page).screenshot(path=str(path))
