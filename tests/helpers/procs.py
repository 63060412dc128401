"""Process helpers for tests: readiness through files, leak detection by pid and cookie."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psutil

from tests.helpers.wait import until_file

TREE = str(Path(__file__).with_name("tree.py"))
COOKIE = b"JUPYTER_CANCEL_OP="
KERNEL_COOKIE = b"JUPYTER_CANCEL_KERNEL="
#: Set for the whole test session and inherited by everything it starts, so that leak checks
#: look only at our own processes, never at another user's work on a shared machine.
SESSION_MARK = "JUPYTER_CANCEL_TEST_SESSION"


def tree_cmd(mode: str, ready: Path) -> list[str]:
    return [sys.executable, TREE, mode, str(ready)]


def announced(ready: Path) -> list[int]:
    """Pids the members of a tree wrote to its ready file so far."""
    try:
        return [int(x) for x in ready.read_text().split()]
    except FileNotFoundError:
        return []


def left_alive(pids) -> list[int]:
    """The pids still running (a zombie counts as gone: it holds nothing)."""
    return [pid for pid in pids if alive(pid)]


def wait_ready(ready: Path, count: int, timeout: float = 10.0) -> list[int]:
    """Pids announced in ``ready`` once ``count`` members are up (raises on timeout)."""
    return until_file(
        ready, lambda: announced_at_least(ready, count), timeout, f"{ready}: {count} members announced"
    )


def announced_at_least(ready: Path, count: int) -> list[int] | None:
    pids = announced(ready)
    return pids if len(pids) >= count else None


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def cookie_carriers() -> dict[int, float]:
    """Processes this test session started (directly or not) whose environment carries an
    operation's or a kernel's cookie: (pid → create_time)."""
    found = {}
    me = os.getpid()
    mark = f"{SESSION_MARK}={os.environ.get(SESSION_MARK, '')}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = fh.read()
            ours = env.startswith(mark + b"\0") or b"\0" + mark + b"\0" in env
            if ours and any(env.startswith(c) or b"\0" + c in env for c in (COOKIE, KERNEL_COOKIE)):
                proc = psutil.Process(int(entry))
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found[proc.pid] = proc.create_time()
        except (OSError, psutil.Error):
            continue
    return found


def descendants() -> dict[int, float]:
    out = {}
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out[p.pid] = p.create_time()
        except psutil.Error:
            continue
    return out


def kill_pids(pids) -> None:
    procs = []
    for pid, ctime in pids.items():
        try:
            p = psutil.Process(pid)
            if p.create_time() == ctime:
                p.kill()
                procs.append(p)
        except psutil.Error:
            continue
    psutil.wait_procs(procs, timeout=3)
