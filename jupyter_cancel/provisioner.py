"""A kernel provisioner that owns a kernel's whole process tree, in any language, whoever starts
the kernel through jupyter_client (nbclient, papermill, ``jupyter console``, a jupyter_server).

The kernel extension owns what an IPython kernel's cells start; a kernel in another language
(IRkernel, bash_kernel, xeus-python) has nothing of ours inside. Without a jupyter_server of
ours to watch it, this provisioner does the same thing from the launch side: the kernel starts
with a cookie of its own in its environment (every process it starts inherits it) and, where
one can be made, in a cgroup of its own; when the kernel is shut down or restarted — or was
found dead by its client — every process carrying that cookie or left in that cgroup is ended
(SIGTERM, ``grace``, SIGKILL), `setsid` members and double-fork daemons included.

A kernelspec opts in with::

    "metadata": {"kernel_provisioner": {"provisioner_name": "jupyter-cancel"}}

It is the same code the server uses for such kernels (``server/foreign.py``'s ``Launch``: the
tree by cookie and cgroup, its containment); under our server both run, and ending a tree twice
ends it once.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import psutil
from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning import LocalProvisioner
from traitlets import Float

from .core.proctree import KERNEL_COOKIE, terminate
from .server.foreign import Launch, contain, new_cookie


class CancelProvisioner(LocalProvisioner):  # type: ignore[misc]
    """``LocalProvisioner`` plus ownership of everything the kernel starts."""

    grace = Float(2.0, config=True, help="Seconds between SIGTERM and SIGKILL for the kernel's processes.")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.launch: Launch | None = None
        self.cookie: str | None = None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        kwargs = await super().pre_launch(**kwargs)
        self.cookie = new_cookie()
        kwargs["env"] = {**(kwargs.get("env") or os.environ), KERNEL_COOKIE: self.cookie}
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        info = await super().launch_kernel(cmd, **kwargs)
        assert self.cookie is not None and self.pid is not None
        try:
            self.launch = Launch(self.kernel_id, self.cookie, psutil.Process(self.pid))
        except psutil.NoSuchProcess:
            return info  # it died at once: its client finds out
        await asyncio.to_thread(contain, self.launch)
        return info

    async def cleanup(self, restart: bool = False) -> None:
        """The kernel is gone (shut down, restarted, or found dead): so is what it started."""
        launch, self.launch = self.launch, None
        if launch is not None:
            await asyncio.to_thread(end_tree, launch, self.grace)
        await super().cleanup(restart=restart)


def end_tree(launch: Launch, grace: float) -> None:
    terminate([launch.tree(grace, helpers=True)])
    if launch.cgroup is not None:
        launch.cgroup.remove()
