"""Capture benchmarks (not tests): what owning every process costs, and how fast plain-code
trees end. A real python3 kernel; the stock figures are the same kernel with capture off.

    .venv/bin/python bench/bench_capture.py [--n 20]

1. per-call overhead of capture on ``subprocess.run(["true"])``: in one kernel, interleaved
   batches with ``%jc_capture`` on and off (the same process, the same moment);
2. re-run of a cell whose plain-``Popen`` tree (setsid member) is alive → tree gone;
3. kernel SIGKILL → captured trees gone (the watchdog);
4. survivors of each launch style after a re-run, capture on vs off.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_kernel import gone_after, pct

from tests.helpers.kernel import Kernel
from tests.helpers.procs import TREE, alive, wait_ready
from tests.kernel.test_capture import HEAD, STYLES


def overhead(k: Kernel, batches: int = 20, per_batch: int = 50) -> dict[str, float]:
    code = (
        "import subprocess, time\n"
        f"_t = []\nfor _ in range({per_batch}):\n"
        "    _s = time.perf_counter(); subprocess.run(['true']); _t.append(time.perf_counter() - _s)\n"
        "_t.sort(); print(_t[len(_t) // 2] * 1000)"
    )
    on, off = [], []
    for _ in range(batches):
        for state, out in (("on", on), ("off", off)):
            k.execute(f"%jc_capture {state}", cell="switch")
            out.append(float(k.execute(code, cell="probe").stdout.split()[-1]))
    k.execute("%jc_capture on", cell="switch")
    return {
        "on_p50_ms": round(pct(on, 50), 3),
        "off_p50_ms": round(pct(off, 50), 3),
        "delta_ms": round(pct(on, 50) - pct(off, 50), 3),
    }


def idle_cpu(k: Kernel, seconds: float = 10.0) -> dict[str, float]:
    """CPU the kernel process uses while nothing happens, capture on vs off (% of a core)."""
    import psutil

    proc = psutil.Process(k.pid)
    out = {}
    for state in ("on", "off"):
        k.execute(f"%jc_capture {state}", cell="switch")
        k.execute("import subprocess; [subprocess.run(['true']) for _ in range(20)]", cell="warm")
        before = sum(proc.cpu_times()[:2])
        time.sleep(seconds)  # a benchmark's measuring window, not a test's wait
        out[f"capture_{state}_pct"] = round(100 * (sum(proc.cpu_times()[:2]) - before) / seconds, 3)
    k.execute("%jc_capture on", cell="switch")
    return out


def popen_tree(k: Kernel, cell: str, ready: Path) -> list[int]:
    r = k.execute(
        HEAD
        + f"_p = subprocess.Popen([sys.executable, {TREE!r}, 'three', {str(ready)!r}], start_new_session=True)",
        cell=cell,
    )
    assert r.ok, r
    return wait_ready(ready, 3)


def rerun(k: Kernel, tmp: Path, n: int) -> list[float]:
    out = []
    for i in range(n):
        pids = popen_tree(k, "plain", tmp / f"rerun{i}")
        msg_holder = []
        lat = gone_after(pids, lambda: msg_holder.append(k.send("pass", cell="plain")), timeout=10)
        k.collect(msg_holder[0])
        out.append(lat if lat is not None else float("nan"))
    return out


def sigkill(tmp: Path, n: int) -> list[float]:
    out = []
    for i in range(n):
        k = Kernel()
        pids = popen_tree(k, "a", tmp / f"kill{i}")
        lat = gone_after(pids, lambda k=k: os.kill(k.pid, signal.SIGKILL), timeout=10)
        out.append(lat if lat is not None else float("nan"))
        k.kc.stop_channels()
        k.km.shutdown_kernel(now=True)
    return out


def survivors(k: Kernel, tmp: Path, capture: bool) -> dict[str, int]:
    k.execute(f"%jc_capture {'on' if capture else 'off'}", cell="switch")
    out = {}
    for style, launch in STYLES.items():
        ready = tmp / f"{style}-{capture}"
        r = k.execute(HEAD + f"TREE, READY = {TREE!r}, {str(ready)!r}\n{launch}", cell="styles")
        assert r.ok, r
        pids = wait_ready(ready, 3)
        k.execute("pass", cell="styles")  # the re-run
        deadline = time.monotonic() + 3
        while [p for p in pids if alive(p)] and time.monotonic() < deadline:
            time.sleep(0.01)
        left = [p for p in pids if alive(p)]
        out[style] = len(left)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    k.execute("%jc_capture on", cell="switch")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20)
    n = ap.parse_args().n
    result: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        k = Kernel()
        try:
            result["overhead subprocess.run(['true'])"] = overhead(k)
            result["idle kernel CPU over 10 s"] = idle_cpu(k)
            lat = rerun(k, tmp, n)
            result["re-run -> plain Popen tree (setsid member) gone, ms"] = {
                "p50": round(pct(lat, 50), 2),
                "p99": round(pct(lat, 99), 2),
                "n": n,
            }
            result["survivors after a re-run, capture on"] = survivors(k, tmp, True)
            result["survivors after a re-run, capture off (stock)"] = survivors(k, tmp, False)
        finally:
            k.close()
        lat = sigkill(tmp, max(5, n // 2))
        result["kernel SIGKILL -> captured tree gone, ms"] = {
            "p50": round(pct(lat, 50), 2),
            "max": round(max(lat), 2),
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.helpers.home import private_jupyter_home

    private_jupyter_home("jupyter-cancel-bench-", remove_at_exit=True)  # never the user's home
    main()
