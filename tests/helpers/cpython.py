"""CPython's own tests of the routes capture wraps, run inside a real kernel.

The code below runs as a cell: it loads each named test (a module, a class, or
``mp:<start method>`` for multiprocessing's process tests), runs it with unittest and prints
one JSON line: the ids that failed or errored, how many ran, and whether the kernel's own pid
is unchanged (a test that kills the kernel shows up as a dead kernel instead).
"""

from __future__ import annotations

import json
from typing import Any

from tests.helpers.kernel import Kernel

#: What each group runs (a group is one test of ours: one stock kernel, one with the extension).
GROUPS: dict[str, list[str]] = {
    "subprocess": ["test.test_subprocess"],
    "os": [
        "test.test_os",
        "test.test_posix",
        "test.test_pty",
        "test.test_fork1",
        "test.test_wait3",
        "test.test_wait4",
    ],
    "signal": ["test.test_signal", "test.test_threading.InterruptMainTests"],
    "asyncio": ["test.test_asyncio.test_subprocess"],
    "multiprocessing": ["mp:spawn", "mp:fork", "mp:forkserver"],
}

RUNNER = r"""
import asyncio, io, json, os, sys, types, unittest, warnings

def _jc_load(name):
    loader = unittest.TestLoader()
    if name.startswith("mp:"):
        # As CPython's test_multiprocessing_<method> does, in a module the spawned children
        # can import by name (they get this sys.path).
        method = name[3:]
        import importlib, tempfile
        folder = tempfile.mkdtemp(prefix="jc-cpython-", dir=os.getcwd())  # (removed with the cwd)
        module = f"jc_cpython_mp_{method}"
        with open(os.path.join(folder, module + ".py"), "w") as fh:
            fh.write("from test import _test_multiprocessing\n"
                     f"_test_multiprocessing.install_tests_in_module_dict(globals(), {method!r}, only_type='processes')\n")
        sys.path.insert(0, folder)
        mod = importlib.import_module(module)
        return unittest.TestSuite(
            loader.loadTestsFromTestCase(getattr(mod, cls)) for cls in sorted(dir(mod)) if cls.startswith("WithProcesses")
        )
    return loader.loadTestsFromName(name)

def _jc_run(names, only=None):
    # In a folder of its own, as CPython's regrtest runs them: what a test leaves behind
    # (its "@test_<pid>_tmp" files) never lands in the kernel's working directory (the repo).
    import shutil, tempfile
    home, cwd = os.getcwd(), tempfile.mkdtemp(prefix="jc-cpython-cwd-")
    os.chdir(cwd)
    try:
        _jc_run_here(names, only)
    finally:
        os.chdir(home)
        shutil.rmtree(cwd, ignore_errors=True)

def _jc_run_here(names, only):
    out = {"failed": [], "ran": 0, "pid": os.getpid(), "why": {}}
    for name in names:
        suite = _jc_load(name)
        if only is not None:
            def keep(s):
                kept = unittest.TestSuite()
                for t in s:
                    if isinstance(t, unittest.TestSuite):
                        kept.addTest(keep(t))
                    elif t.id() in only:
                        kept.addTest(t)
                return kept
            suite = keep(suite)
        # The kernel's cell runs inside its event loop; asyncio's tests start loops of their own.
        loop = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(None)
        try:
            with warnings.catch_warnings():
                result = unittest.TextTestRunner(stream=io.StringIO(), verbosity=0).run(suite)
        finally:
            asyncio.events._set_running_loop(loop)
        out["ran"] += result.testsRun
        out["failed"] += [t.id() for t, _ in result.failures + result.errors]
        out["why"].update({t.id(): tb.strip().splitlines()[-1][:300] for t, tb in result.failures + result.errors})
        out["failed"] += [t.id() for t in result.unexpectedSuccesses]
    print("\nJC-RESULT " + json.dumps(out))
"""


def run(
    kernel: Kernel, names: list[str], only: list[str] | None = None, timeout: float = 900
) -> dict[str, Any]:
    """Run ``names`` in ``kernel``; the result, or ``{"died": True}`` if the kernel died."""
    r = kernel.execute(RUNNER + f"\n_jc_run({names!r}, {only!r})", cell="cpython-suite", timeout=timeout)
    for line in reversed(r.stdout.splitlines()):
        if line.startswith("JC-RESULT "):
            result: dict[str, Any] = json.loads(line[len("JC-RESULT ") :])
            result["failed"] = sorted(set(result["failed"]))
            return result
    return {
        "died": not kernel.km.is_alive(),
        "failed": [],
        "ran": 0,
        "stdout": r.stdout[-2000:],
        "errors": r.errors,
    }
