"""Tasks the Dask and Ray tests submit (imported on the workers by name: the repository is on
their path)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TREE = str(Path(__file__).with_name("tree.py"))
#: Members a ``tree_task`` announces: ``three`` (root, child, setsid grandchild) and ``daemon``
#: (root, double-forked grandchild) under one ``sh`` that waits for both.
MEMBERS = 5


def tree_task(ready: str) -> int:
    """A task holding a tree (plain ``subprocess``: captured): a shell, a background job, a
    setsid member and a double-fork daemon; returns the shell's exit code."""
    py = sys.executable
    return subprocess.run(
        ["sh", "-c", f"{py} {TREE} three {ready} & {py} {TREE} daemon {ready}; wait"]
    ).returncode


def run_task(ready: str) -> int:
    """The same tree through ``jc.run`` (its cancel raises ``Cancelled`` in the task)."""
    import jupyter_cancel as jc

    py = sys.executable
    cmd = f"{py} {TREE} three {ready} & {py} {TREE} daemon {ready}; wait"
    return jc.run(cmd, shell=True, display=False).returncode or 0


def quick(code: int) -> int:
    """A tree that ends by itself with ``code``."""
    return subprocess.run(["sh", "-c", f"sleep 0.05; exit {code}"]).returncode


def value(x: int) -> int:
    return x
