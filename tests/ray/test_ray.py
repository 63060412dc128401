"""The core inside Ray tasks (Ray is an optional test dependency: ``pip install ray``).

Ray's own cancel leaves a task's tree alive: ``ray.cancel(ref)`` raises ``KeyboardInterrupt``
through ``_thread.interrupt_main``, which a thread blocked in a lock never sees, and
``force=True`` kills the worker and its direct children, not their setsid descendants. With
``jc.run`` in the task both end the whole tree: ``Operation.wait`` waits in slices, and in a
Ray worker the watchdog is started detached (not a direct child of the worker)."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray", reason="RAY IS NOT INSTALLED: pip install ray (an optional test dependency)")

from tests.helpers.dask_tasks import MEMBERS  # noqa: E402
from tests.helpers.procs import wait_ready  # noqa: E402
from tests.helpers.wait import wait_gone  # noqa: E402


@pytest.fixture
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("force", [False, True], ids=["ray.cancel", "force"])
def test_ray_cancel_ends_the_tree_of_jc_run_in_the_task(ray_local, tmp_path, force):
    from tests.helpers.dask_tasks import run_task

    for i in range(2):  # a forced cancel kills the worker: the second round runs in a new one
        ready = tmp_path / f"tree{i}"
        ref = ray.remote(run_task).remote(str(ready))
        pids = wait_ready(ready, MEMBERS, timeout=60)
        ray.cancel(ref, force=force)
        assert wait_gone(pids, timeout=10) == []
        try:
            value = ray.get(ref, timeout=30)
        except (ray.exceptions.TaskCancelledError, ray.exceptions.WorkerCrashedError):
            continue
        # A forced cancel kills the worker's children first: jc.run may see its root killed
        # and return that status before Ray kills the worker. Never a success.
        assert force and value < 0, value
