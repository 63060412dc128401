"""The core's mechanisms, as anyio parametrises its backends: tests that take ``mechanism``
run once per platform backend a tree can be held and awaited with (``core/platform.py``)."""

from __future__ import annotations

import dataclasses

import pytest

from jupyter_cancel.core import platform
from jupyter_cancel.core.cgroup import Cgroup

MECHANISMS = ["cgroup", "no-cgroup", "no-pidfd", "portable"]


@pytest.fixture(params=MECHANISMS)
def mechanism(request):
    """``cgroup``: a writable cgroup v2 per tree (skipped where there is none);
    ``no-cgroup``: walk + cookie + pidfds (most containers);
    ``no-pidfd``: no cgroup and no pidfds, waits through psutil;
    ``portable``: psutil only — no pidfd, no cgroup, no /proc reads of ours (what macOS gets)."""
    if request.param == "cgroup" and not Cgroup.available():
        pytest.skip("no writable cgroup v2 here")
    detected = platform.current()
    chosen = {
        "cgroup": detected,
        "no-cgroup": dataclasses.replace(detected, cgroups=False),
        "no-pidfd": dataclasses.replace(detected, cgroups=False, pidfd=False),
        "portable": platform.Platform.portable(),
    }[request.param]
    with platform.use(chosen):
        yield request.param
