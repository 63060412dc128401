"""Cancellation that reaches a Dask cluster (``pip install jupyter_cancel[dask]``).

In a notebook::

    import jupyter_cancel as jc
    future = jc.dask.submit(client, fn, *args)          # or jc.dask.compute(client, collection)
    with jc.dask.tracked(client):                       # or anything submitted in a block
        futures = client.map(fn, items)

Each submission is an operation of the cell: re-running the cell, interrupting or restarting
the kernel, closing the tab or pressing Stop cancels it on the cluster, and the processes the
task started there (through ``jc.*``, ``subprocess`` or any library) end with it. Plain Dask
cancels (``future.cancel()``, ``client.cancel``, a client that goes away) end those processes
too, once ``install(client)`` (or any helper) put the plugin on the workers.
"""

from __future__ import annotations

from .client import (
    ClusterLink,
    DaskRunner,
    compute,
    install,
    operation_of,
    remote_operations,
    submit,
    tracked,
)
from .worker import TOPIC, JupyterCancelPlugin, WorkerHost

__all__ = [
    "TOPIC",
    "DaskRunner",
    "JupyterCancelPlugin",
    "ClusterLink",
    "WorkerHost",
    "compute",
    "install",
    "operation_of",
    "remote_operations",
    "submit",
    "tracked",
]
