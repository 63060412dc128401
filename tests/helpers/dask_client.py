"""A notebook's stand-in in a process of its own (a test SIGKILLs it): it submits one
``tree_task`` through ``jupyter_cancel.dask`` with a policy (or, with ``stock``, plain ``client.submit``) and waits.

    python dask_client.py SCHEDULER READY POLICY KEYFILE
"""

import sys

from distributed import Client

import jupyter_cancel as jc
from tests.helpers.dask_tasks import tree_task


def main(address: str, ready: str, policy: str, keyfile: str) -> None:
    client = Client(address, set_as_default=False)
    if policy == "stock":  # plain Dask, no jupyter_cancel anywhere
        future = client.submit(tree_task, ready)
    else:
        future = jc.dask.submit(client, tree_task, ready, policy=policy)
    with open(keyfile + ".tmp", "w") as fh:
        fh.write(str(future.key))
    import os

    os.rename(keyfile + ".tmp", keyfile)
    sys.stdin.read()  # until killed


if __name__ == "__main__":
    main(*sys.argv[1:])
