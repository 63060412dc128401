"""CPython's own tests of every route capture wraps (``subprocess``, ``os.system``,
``posix_spawn``, ``fork``, ``pty``, signals, asyncio's subprocesses, multiprocessing's start
methods), run in a real kernel with the extension loaded and in a stock kernel: a test that
passes stock and fails with jupyter_cancel fails here, and the kernel must survive them all.

The whole group runs with the extension; the stock kernel runs what failed there (a test that
passes with us cannot be one that passes stock and fails with us), which halves the time.

A difference is confirmed before it counts: the tests that differ run again, alone, in a fresh
kernel of each kind (these suites have timing-sensitive tests; a shared machine is noisy).
"""

from __future__ import annotations

import pytest

from tests.helpers import cpython
from tests.helpers.kernel import Kernel

pytestmark = pytest.mark.timeout(1800)


def _run(load_ext: bool, names: list[str], only: list[str] | None = None) -> dict:
    k = Kernel(load_ext=load_ext)
    try:
        return cpython.run(k, names, only)
    finally:
        k.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    "group",
    sorted(cpython.GROUPS),
)
def test_cpython_suite_passes_with_jupyter_cancel_as_in_a_stock_kernel(group):
    names = cpython.GROUPS[group]
    ours = _run(True, names)
    assert not ours.get("died") and "pid" in ours, f"the kernel with jupyter_cancel died: {ours}"
    assert ours["ran"] > 0, ours
    stock = _run(False, names, ours["failed"]) if ours["failed"] else {"pid": 0, "failed": []}
    assert "pid" in stock, f"the stock kernel did not finish: {stock}"
    differ = sorted(set(ours["failed"]) - set(stock["failed"]))
    if differ:
        again_ours = _run(True, names, differ)
        again_stock = _run(False, names, differ)
        confirmed = sorted(set(again_ours["failed"]) - set(again_stock["failed"]))
        assert not confirmed, f"pass in a stock kernel, fail with jupyter_cancel: {confirmed}"
