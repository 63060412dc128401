"""What a process tree costs, sampled cheaply: CPU %, RSS and process count now, peak RSS and
CPU seconds so far. Sampled only while someone looks (a widget on screen); one
``psutil.Process`` per member is kept, since its ``cpu_percent`` measures from the last call."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import psutil


class Usage:
    """The running totals of one tree."""

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}
        #: CPU seconds per member, as last seen (a member that ended keeps what it used).
        self._cpu: dict[int, float] = {}
        self.peak_rss = 0
        #: A widget's feeder and the panel's request may sample the same tree at once.
        self._lock = threading.Lock()

    def sample(self, pids: Iterable[int]) -> dict[str, Any]:
        """Sample the members now: ``{"cpu_percent", "rss", "processes", "peak_rss",
        "cpu_seconds"}`` (CPU % of one core, summed; the first sample of a member says 0)."""
        with self._lock:
            return self._sample(pids)

    def _sample(self, pids: Iterable[int]) -> dict[str, Any]:
        procs: dict[int, psutil.Process] = {}
        cpu = rss = 0.0
        for pid in pids:
            proc = self._procs.get(pid)
            try:
                if proc is None:
                    proc = psutil.Process(pid)
                    proc.cpu_percent(None)  # the baseline
                with proc.oneshot():
                    cpu += proc.cpu_percent(None)
                    rss += proc.memory_info().rss
                    times = proc.cpu_times()
                self._cpu[pid] = times.user + times.system
                procs[pid] = proc
            except psutil.Error:
                continue  # gone meanwhile
        self._procs = procs
        self.peak_rss = max(self.peak_rss, int(rss))
        return {
            "cpu_percent": round(cpu, 1),
            "rss": int(rss),
            "processes": len(procs),
            "peak_rss": self.peak_rss,
            "cpu_seconds": round(sum(self._cpu.values()), 3),
        }


def describe(resources: dict[str, Any]) -> str:
    """``CPU 98% · 45 MiB · 3 processes`` (live) or ``peak 45 MiB · 1.2 CPU s`` (ended)."""
    if resources.get("processes"):
        count = resources["processes"]
        return (
            f"CPU {resources['cpu_percent']:.0f}% · {_size(resources['rss'])} · "
            f"{count} process{'es' if count != 1 else ''}"
        )
    return f"peak {_size(resources.get('peak_rss', 0))} · {resources.get('cpu_seconds', 0):.1f} CPU s"


def _size(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit in ("B", "KiB") else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
