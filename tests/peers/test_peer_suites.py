"""Jupyter's own test suites, run from the sdists of the installed versions with jupyter_cancel
loaded as in use (``jc_enable``), and stock: a test that passes stock and fails with
jupyter_cancel fails here.

The whole suite runs with jupyter_cancel; stock runs only what failed with it (a test that
passes with us cannot be one that passes stock and fails with us), which halves the time. A
difference counts only when confirmed: the differing tests run again, alone, in both modes
(these suites have timing-sensitive tests; a shared machine is noisy). The sdists are
downloaded once into ``.venv/peer-sdists`` (``pip download``, PyPI).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CACHE = Path(sys.prefix) / "peer-sdists"
#: Each suite: the distribution, the test paths of its sdist that exercise kernels (for
#: ipykernel: those that start kernel processes, which get the extension), and
#: pytest options it needs here (jupyter_server's suite does not use pytest-asyncio, which
#: nbclient's needs).
SUITES = {
    "jupyter_server": (
        "jupyter_server",
        ["tests/services/kernels", "tests/services/sessions", "tests/services/api"],
        ["-p", "no:asyncio"],
    ),
    "nbclient": ("nbclient", ["tests"], ["-o", "asyncio_default_fixture_loop_scope=function"]),
    "ipykernel": (
        "ipykernel",
        ["tests/test_kernel.py", "tests/test_message_spec.py", "tests/test_start_kernel.py"],
        ["-o", "asyncio_default_fixture_loop_scope=function"],
    ),
    "jupyter_client": (
        "jupyter_client",
        ["tests/test_kernelmanager.py", "tests/test_multikernelmanager.py", "tests/test_client.py"],
        ["-p", "no:asyncio"],
    ),
}
RESULT = re.compile(r"^(FAILED|ERROR) (\S+)")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def _sdist(dist: str, tmp: Path) -> Path:
    """The sdist of the installed version, unpacked into ``tmp``."""
    version = importlib.metadata.version(dist)
    CACHE.mkdir(parents=True, exist_ok=True)
    found = [p for p in CACHE.glob("*.tar.gz") if p.name.lower().startswith(f"{dist}-{version}".lower())]
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
            # the sdist's metadata is prepared with this environment's build tools (hatchling):
            # an isolated build would build those from source too
            + ["--no-build-isolation", "--dest", str(CACHE), f"{dist}=={version}"],
            check=True,
        )
        found = [p for p in CACHE.glob("*.tar.gz") if p.name.lower().startswith(f"{dist}-{version}".lower())]
    with tarfile.open(found[0]) as tar:
        tar.extractall(tmp, filter="data")
    return next(p for p in tmp.iterdir() if p.is_dir())


def _run(src: Path, targets: list[str], options: list[str], enabled: bool) -> set[str]:
    """The node ids that failed or errored."""
    env = dict(os.environ)
    env.pop("PYTEST_CURRENT_TEST", None)
    args = [sys.executable, "-m", "pytest", "-q", "-rfE", "--color=no", "-p", "no:cacheprovider"]
    args += ["-o", "addopts=", "-o", "timeout=300", *options]
    if not enabled:  # stock: not even the environment-wide kernel autoload
        env["JUPYTER_CANCEL_KERNEL_EXTENSION"] = "0"
    if enabled:
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        args += ["-p", "jc_enable"]
    out = subprocess.run(args + targets, cwd=src, env=env, capture_output=True, text=True, timeout=3000)
    failed = {m.group(2) for line in out.stdout.splitlines() if (m := RESULT.match(line))}
    # the run reached its summary (a subset may all fail: "2 failed" without "passed")
    assert re.search(r"\d+ (passed|failed)", out.stdout), out.stdout[-3000:] + out.stderr[-2000:]
    return failed


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_peer_suite_passes_with_jupyter_cancel_as_stock(suite, tmp_path):
    dist, targets, options = SUITES[suite]
    src = _sdist(dist, tmp_path)
    ours = _run(src, targets, options, enabled=True)
    stock = _run(src, sorted(ours), options, enabled=False) if ours else set()
    differ = sorted(ours - stock)
    if differ:
        confirmed = sorted(
            _run(src, differ, options, enabled=True) - _run(src, differ, options, enabled=False)
        )
        assert not confirmed, f"pass stock, fail with jupyter_cancel: {confirmed}"
