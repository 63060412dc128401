"""Which termination mechanism catches which escape (a measurement, not a test).

    .venv/bin/python bench/escapes.py

For each tree shape, start it, cancel it with one set of mechanisms on, and count the
processes left alive (then kill those by pid).
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jupyter_cancel as jc
from jupyter_cancel.core import platform
from jupyter_cancel.core.cgroup import Cgroup
from tests.helpers.procs import alive, tree_cmd, wait_ready

SHAPES = [
    ("child + grandchild", "grandchild", 2),
    ("setsid grandchild", "setsid", 3),
    ("double-fork daemon (reparented to init)", "daemon", 2),
    ("child ignoring SIGTERM", "ignore_term", 1),
    ("forks while being killed", "fork_on_term", 1),
    ("double-fork daemon with env cleared (env -i)", "envclear", 2),
]
MECHANISMS = [
    ("walk", False, False),
    ("walk+cookie", True, False),
    ("walk+cookie+cgroup", True, True),
]


def run(mode: str, count: int, cookie: bool, cgroup: bool) -> int:
    chosen = dataclasses.replace(platform.current(), cookie_sweep=cookie, cgroups=cgroup)
    with platform.use(chosen), tempfile.TemporaryDirectory() as d:
        ready = Path(d) / "r"
        op = jc.start(tree_cmd(mode, ready), display=False, grace=0.3)
        pids = wait_ready(ready, count)
        op.cancel()
        late = Path(str(ready) + ".late")
        if late.exists():
            pids += wait_ready(late, 1)
        left = [p for p in pids if alive(p)]
        for pid in left:
            psutil.Process(pid).kill()
        return len(left)


def main() -> None:
    print(f"cgroup v2 available: {Cgroup.available()}")
    print("| escape | " + " | ".join(m[0] for m in MECHANISMS) + " |")
    print("|---|" + "---|" * len(MECHANISMS))
    for label, mode, count in SHAPES:
        cells = []
        for _, cookie, cgroup in MECHANISMS:
            if cgroup and not Cgroup.available():
                cells.append("n/a")
                continue
            left = run(mode, count, cookie, cgroup)
            cells.append("caught" if left == 0 else f"**{left} escaped**")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.helpers.home import private_jupyter_home

    private_jupyter_home("jupyter-cancel-bench-", remove_at_exit=True)  # never the user's home
    main()
