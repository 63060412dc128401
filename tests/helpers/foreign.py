"""Kernels in other languages (no kernel extension in them): how each starts background work
as its users would, and the machine's kernel specs for them."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

#: How each language starts work in the background: a tree with a ``setsid`` member
#: (tree.py "setsid": root, child, setsid grandchild) and a double-fork daemon (tree.py
#: "daemon": root, reparented grandchild). Format with py, tree, ready.
STARTS = {
    "ir": 'system("{py} {tree} setsid {ready}", wait = FALSE)\nsystem("{py} {tree} daemon {ready}", wait = FALSE)',
    "bash": "{py} {tree} setsid {ready} &\n{py} {tree} daemon {ready} &",
    "xpython": (
        "import subprocess\n"
        "subprocess.Popen(['{py}', '{tree}', 'setsid', '{ready}'], start_new_session=True)\n"
        "subprocess.Popen(['{py}', '{tree}', 'daemon', '{ready}'])"
    ),
}
MEMBERS = 5
#: A cell printing 42 in each language.
STILL_WORKS = {"ir": "cat(6 * 7)", "bash": "echo $((6 * 7))", "xpython": "print(6 * 7)"}


def use_test_kernels(folder: Path) -> None:
    """Make the test-only kernel specs (bash, xeus-python: ``scripts/setup.sh`` keeps them in
    ``.venv/test-kernels``, out of the main job's Launcher) findable: cleaned copies in
    ``folder``, which goes first on ``JUPYTER_PATH``."""
    source = Path(sys.prefix) / "test-kernels" / "share" / "jupyter" / "kernels"
    if source.is_dir():
        specs = {p.name: str(p) for p in source.iterdir() if (p / "kernel.json").is_file()}
        copy_specs(specs, folder / "kernels")
    rest = [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p and p != str(folder)]
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(folder), *rest])


def installed() -> dict[str, str]:
    """The foreign kernels installed on this machine: name → spec folder."""
    return {k: v for k, v in KernelSpecManager().find_kernel_specs().items() if k in STARTS}


def copy_specs(specs: dict[str, str], kernels_dir: Path) -> None:
    """Copy kernel specs, keeping only the keys KernelSpec knows (bash_kernel writes one it
    does not, which traitlets warns about: an error under -W error)."""
    known = set(KernelSpec.class_trait_names())
    for name, folder in specs.items():
        target = kernels_dir / name
        shutil.copytree(folder, target, dirs_exist_ok=True)
        spec = json.loads((target / "kernel.json").read_text())
        (target / "kernel.json").write_text(json.dumps({k: v for k, v in spec.items() if k in known}))
