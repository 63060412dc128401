"""Where a captured spawn's cost goes (not a test): one kernel with jupyter_cancel, the loop of
1000 ``subprocess.run(["true"])`` timed with capture switched to each phase in turn.

    .venv/bin/python bench/spawn_phases.py [--rounds 6]

Phases, each including the ones before it:

* ``off``: capture disabled (``%jc_capture off``): what a stock kernel pays;
* ``wrapper``: the wrappers on (the caller's frame walk, the cookie in the environment under its
  lock, the spawn's context), but no operation;
* ``operation``: an operation made and registered on the spawning thread and ended right
  after the spawn returns (what every captured spawn paid before session 15), no adoption;
* ``on``: the real capture (the spawn expected; its operation made by the tick 20 ms later,
  in a batch, which ends it).

Rounds alternate the order (ABCD, DCBA); the medians and their ratio to ``off`` are printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers.kernel import Kernel

SETUP = r"""
import subprocess, time
from jupyter_cancel.core.model import State
from jupyter_cancel.core.operation import new_id
from jupyter_cancel.kernel import extension as _extension
_cap = _extension._installed.capture

def _end_now(expected, pid, argv, popen):
    op = _cap.registry.adoptions.withdraw(expected) or _cap.registry.adoptions.operation_of(expected)
    _cap.registry.finish(op, State.COMPLETED)

def _phase(name):
    _cap.enabled = name != "off"
    for hook in ("begin", "spawned"):
        _cap.__dict__.pop(hook, None)  # the class's own
    if name == "wrapper":
        _cap.begin = lambda argv, popen=None: (new_id(), None, False)
        _cap.spawned = lambda *a: None
    elif name == "operation":
        _cap.spawned = _end_now

def _loop(name):
    _phase(name)
    try:
        start = time.perf_counter()
        for _ in range(1000):
            subprocess.run(["true"])
        return time.perf_counter() - start
    finally:
        time.sleep(0.1)  # the tick settles before the next phase
        _phase("on")
"""
PHASES = ("off", "wrapper", "operation", "on")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    rounds = ap.parse_args().rounds
    k = Kernel(load_ext=True)
    try:
        assert k.execute(SETUP, cell="setup").ok
        walls: dict[str, list[float]] = {name: [] for name in PHASES}
        for name in PHASES:
            k.value(f"_loop({name!r})", cell="loop", timeout=300)  # warm-up, not counted
        for i in range(rounds):
            for name in PHASES if i % 2 == 0 else tuple(reversed(PHASES)):
                walls[name].append(float(k.value(f"_loop({name!r})", cell="loop", timeout=300)))
    finally:
        k.close()
    base = statistics.median(walls["off"])
    for name, values in walls.items():
        median = statistics.median(values)
        print(f"{name:10} {median:.3f} s  {median / base:.3f}x  {[round(v, 3) for v in values]}")


if __name__ == "__main__":
    from tests.helpers.home import private_jupyter_home

    private_jupyter_home("jupyter-cancel-bench-", remove_at_exit=True)  # never the user's home
    main()
