"""The core's mechanisms, as anyio parametrises its backends: tests that take ``mechanism``
run once per way a tree can be held and awaited here."""

from __future__ import annotations

import pytest

from jupyter_cancel.core import monitor, proctree
from jupyter_cancel.core.cgroup import Cgroup

MECHANISMS = ["cgroup", "no-cgroup", "no-pidfd"]


@pytest.fixture(params=MECHANISMS)
def mechanism(request, monkeypatch):
    """``cgroup``: a writable cgroup v2 per tree (skipped where there is none);
    ``no-cgroup``: walk + cookie + pidfds (most containers);
    ``no-pidfd``: no cgroup and no pidfds, waits through psutil (the macOS code paths)."""
    if request.param == "cgroup" and not Cgroup.available():
        pytest.skip("no writable cgroup v2 here")
    if request.param != "cgroup":
        monkeypatch.setattr(Cgroup, "create", classmethod(lambda cls, op_id: None))
    if request.param == "no-pidfd":
        monkeypatch.setattr(proctree, "HAVE_PIDFD", False)
        monkeypatch.setattr(monitor, "HAVE_PIDFD", False)
    return request.param
