"""A Dask ``LocalCluster`` in a process of its own (2 worker processes × 1 thread, with
nannies), so a test can kill clients and workers without killing itself.

    python dask_cluster.py READY

Writes the scheduler's address to READY once the workers are up; closes the cluster when its
stdin closes (the test's fixture closes it). The cluster's log goes to stderr.
"""

import sys

from distributed import LocalCluster


def main(ready: str) -> None:
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, scheduler_port=0
    )
    with open(ready + ".tmp", "w") as fh:
        fh.write(cluster.scheduler_address)
    import os

    os.rename(ready + ".tmp", ready)
    sys.stdin.read()  # until the test closes our stdin
    cluster.close(timeout=20)


if __name__ == "__main__":
    main(sys.argv[1])
