"""Stopping one cell (not a benchmark test): through a real python3 kernel, interleaved with
the kernel interrupt (the only stock way out of a busy cell; a stock re-run queues forever).

    .venv/bin/python bench/cell_stop.py [--n 30]

1. Re-run of a busy pure-Python cell (``while True``) → the new run starts: from sending the
   stop as the labextension does (``stop_cell`` on the control channel, wait for the old
   run's reply, send the execute) to the new run's ``execute_input`` on iopub. Beside it: the
   kernel interrupt (SIGINT, ``KeyboardInterrupt``) then the same execute.
2. Stop of a cell reading a stream through the ``openai`` SDK from the local OpenAI-compatible
   stand-in → the stand-in sees the disconnect (its own clock). Beside it: the interrupt.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_kernel import pct
from jupyter_cancel.llm.devserver import DevServer
from tests.helpers.kernel import Kernel
from tests.helpers.wait import until_file

LOOP = "open({marker!r}, 'w').write('in')\nn = 0\nwhile True:\n    n += 1\n"
STREAM = (
    "from openai import OpenAI\nclient = OpenAI(base_url={url!r}, api_key='x', max_retries=0)\n"
    "stream = client.chat.completions.create(model='demo', messages=[{{'role': 'user', 'content': 'hi'}}], "
    "stream=True)\nfor i, chunk in enumerate(stream):\n    if i == 1:\n        open({marker!r}, 'w').write('in')\n"
)


def started(k: Kernel, marker: Path, code: str, cell: str) -> str:
    marker.unlink(missing_ok=True)
    msg = k.send(code, cell=cell)
    until_file(marker, marker.exists, 60, "cell running")
    return msg


def wait_input(k: Kernel, msg_id: str, timeout: float = 30) -> float:
    """perf_counter() at the execute_input of ``msg_id`` (read off iopub as it arrives)."""
    deadline = time.monotonic() + timeout
    while True:
        m = k.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if m["msg_type"] == "execute_input" and m["parent_header"].get("msg_id") == msg_id:
            return time.perf_counter()


def rerun(k: Kernel, marker: Path, how: str) -> float:
    old = started(k, marker, LOOP.format(marker=str(marker)), "loop")
    t0 = time.perf_counter()
    if how == "stop_cell":
        k.control({"action": "stop_cell", "cell_id": "loop", "reason": "cell_rerun"})
    else:
        k.km.interrupt_kernel()
    result = k.collect(old)
    assert not result.ok, result
    new = k.send("pass", cell="loop")
    t1 = wait_input(k, new)
    k.collect(new)
    return (t1 - t0) * 1000


def stream_stop(k: Kernel, server: DevServer, marker: Path, how: str) -> float | None:
    """ms to the disconnect; None if the server saw none within 5 s (then the stream is closed)."""
    before = len(server.stats()["disconnects"])
    msg = started(k, marker, STREAM.format(url=server.url, marker=str(marker)), "stream")
    t0 = time.time()
    if how == "stop_cell":
        k.control({"action": "stop_cell", "cell_id": "stream", "reason": "user"})
    else:
        k.km.interrupt_kernel()
    seen = server.wait_for("disconnects", before + 1, 5)
    k.collect(msg)
    if not seen:
        k.execute("stream.close()", cell="cleanup")
        return None
    return (server.stats()["disconnects"][-1]["time"] - t0) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=30)
    n = parser.parse_args().n
    tmp = Path(tempfile.mkdtemp())
    server = DevServer(delay=0.05, tokens=100000).start_background()
    # One kernel per method, used in turn: an interrupt leaves state behind (an openai stream
    # generator whose finaliser may read on) that the other method's next run would inherit.
    kernels = {"stop_cell": Kernel(), "interrupt": Kernel(load_ext=False)}  # the baseline: stock
    try:
        for k in kernels.values():
            k.execute("import openai", cell="warm")  # the first import is not what is measured
        results: dict[str, list[float]] = {}
        missed: dict[str, int] = {}
        broken = {how: 0 for how in kernels}
        for _ in range(n):
            for how in list(kernels):
                k = kernels[how]
                try:
                    results.setdefault(f"re-run of a busy loop → new run starts, {how}", []).append(
                        rerun(k, tmp / "m", how)
                    )
                    label = f"stop of an openai SDK stream → server sees disconnect, {how}"
                    ms = stream_stop(k, server, tmp / "s", how)
                except Exception:  # the kernel stopped answering: count it, take a new one
                    broken[how] += 1
                    k.close()
                    kernels[how] = Kernel(load_ext=how == "stop_cell")
                    continue
                if ms is None:
                    missed[label] = missed.get(label, 0) + 1
                else:
                    results.setdefault(label, []).append(ms)
        for label, values in results.items():
            extra = f", {missed[label]} of {n} saw no disconnect in 5 s" if label in missed else ""
            print(
                f"{label}: p50 {pct(values, 50):.1f} ms  p90 {pct(values, 90):.1f} ms  (n={len(values)}{extra})"
            )
        for how, count in broken.items():
            print(f"kernels that stopped answering (replaced), {how}: {count} of {n}")
    finally:
        for k in kernels.values():
            k.close()
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.helpers.home import private_jupyter_home

    private_jupyter_home("jupyter-cancel-bench-", remove_at_exit=True)  # never the user's home
    main()
