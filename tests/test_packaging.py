"""What the sdist and the wheel hold: sources and the built labextension, no caches."""

from __future__ import annotations

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


@pytest.mark.slow
def test_sdist_is_small_and_holds_sources_only(dist):
    (sdist,) = dist.glob("*.tar.gz")
    assert sdist.stat().st_size < 3 * 2**20, f"{sdist.stat().st_size} bytes"
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    assert not [n for n in names if any(f in n for f in FORBIDDEN)]
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
