"""What the environment-wide kernel autoload costs a Python process that is not a kernel (not
a test): ``jupyter_cancel_autoload.pth`` runs one line in every interpreter of the environment.

    .venv/bin/python bench/pth_cost.py [--runs 300]

1. The line itself, in this process, for a command line that is not a kernel's (timeit).
2. End to end: a throwaway venv (no pip) runs ``python -c pass``, interleaved with and without
   the ``.pth`` in its site-packages (the helper module beside it): p50 and mean of each.
   The project's own ``.venv`` is never touched.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PTH = ROOT / "pth" / "jupyter_cancel_autoload.pth"
HELPER = ROOT / "pth" / "_jupyter_cancel_autoload.py"


def line_cost(n: int = 200_000) -> float:
    """µs per execution of the .pth's line for a non-kernel command line."""
    line = PTH.read_text().strip()
    code = compile(line, str(PTH), "exec")
    saved = sys.orig_argv
    sys.orig_argv = [sys.executable, "-c", "pass"]
    try:
        return timeit.timeit(lambda: exec(code, {}), number=n) / n * 1e6
    finally:
        sys.orig_argv = saved


def startup(runs: int) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="jc-pth-bench-") as tmp:
        env_dir = Path(tmp) / "venv"
        venv.EnvBuilder(with_pip=False).create(env_dir)
        python = env_dir / "bin" / "python"
        site = Path(
            subprocess.run(
                [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
        shutil.copy(HELPER, site / HELPER.name)
        times: dict[str, list[float]] = {"without .pth": [], "with .pth": []}
        for i in range(2 * runs + 2):
            with_pth = i % 2 == 1
            if with_pth:
                shutil.copy(PTH, site / PTH.name)
            else:
                (site / PTH.name).unlink(missing_ok=True)
            start = time.perf_counter()
            subprocess.run([python, "-c", "pass"], check=True)
            if i >= 2:  # the first pair warms the page cache
                times["with .pth" if with_pth else "without .pth"].append(
                    (time.perf_counter() - start) * 1000
                )
        return {
            k: {"p50 ms": round(statistics.median(v), 3), "mean ms": round(statistics.fmean(v), 3)}
            for k, v in times.items()
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    result = {"line µs": round(line_cost(), 3), "python -c pass": startup(args.runs)}
    with_, without = result["python -c pass"]["with .pth"], result["python -c pass"]["without .pth"]
    result["p50 delta ms"] = round(with_["p50 ms"] - without["p50 ms"], 3)
    print(json.dumps(result, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.helpers.home import private_jupyter_home

    private_jupyter_home("jupyter-cancel-bench-", remove_at_exit=True)  # never the user's home
    main()
