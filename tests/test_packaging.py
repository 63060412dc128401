"""What the sdist and the wheel hold: sources and the built labextension, no caches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = (
    ".yarn/",
    "node_modules/",
    ".hypothesis/",
    "__pycache__/",
    ".ipynb_checkpoints/",
    "bench/results/",
)


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--no-isolation", "-o", str(out), str(ROOT)],
        check=True,
        env=env,
        capture_output=True,
    )
    return out


#: What the top of the sdist holds (the repository's own top level, and the sdist's metadata).
TOP_LEVEL = {
    ".ci", ".gitignore", "CHANGELOG.md", "LICENSE", "PKG-INFO", "README.md", "bench", "docs",
    "jupyter-config", "jupyter_cancel", "labextension", "notebooks", "pth", "pyproject.toml",
    "scripts", "tests",
}  # fmt: skip


@pytest.mark.slow
def test_sdist_is_small_and_holds_sources_only(dist):
    (sdist,) = dist.glob("*.tar.gz")
    assert sdist.stat().st_size < 3 * 2**20, f"{sdist.stat().st_size} bytes"
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    assert not [n for n in names if any(f in n for f in FORBIDDEN)]
    # nothing at the top a test left behind (CPython's tests make "@test_<pid>_tmp" files)
    top = {n.split("/")[1] for n in names if n.count("/") >= 1}
    assert top <= TOP_LEVEL, sorted(top - TOP_LEVEL)
    for needed in (
        "LICENSE",
        "labextension/package.json",
        "labextension/src/index.ts",
        "jupyter_cancel/core/registry.py",
    ):
        assert any(n.endswith(needed) for n in names), needed


@pytest.mark.slow
def test_wheel_ships_the_built_labextension_and_the_server_config(dist):
    (wheel,) = dist.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any("share/jupyter/labextensions/jupyter-cancel/package.json" in n for n in names)
    assert any("etc/jupyter/jupyter_server_config.d/jupyter_cancel.json" in n for n in names)
    assert "jupyter_cancel/_version.py" in names and "jupyter_cancel/py.typed" in names
    assert not [n for n in names if n.startswith("tests/") or any(f in n for f in FORBIDDEN)]


def test_the_main_jobs_launcher_shows_no_test_only_kernel(tmp_path):
    """The test-only kernels (bash, xeus-python, R) live in ``.venv/test-kernels``, out of what
    Jupyter finds without the tests' ``JUPYTER_PATH``: a new notebook of the main job opens in
    Python, and its Launcher shows only the kernels a user installed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "IPYTHON"))}
    env.update(
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        JUPYTER_DATA_DIR=str(tmp_path / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        IPYTHONDIR=str(tmp_path / "ipython"),
    )
    out = subprocess.run(
        [sys.executable, "-m", "jupyter", "kernelspec", "list", "--json"],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    specs = json.loads(out)["kernelspecs"]
    assert "python3" in specs
    assert not {"bash", "xpython", "xpython-raw"} & set(specs), sorted(specs)
    test_kernels = Path(sys.prefix) / "test-kernels"
    assert not [
        name for name, spec in specs.items() if Path(spec["resource_dir"]).is_relative_to(test_kernels)
    ]
