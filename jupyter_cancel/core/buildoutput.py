"""Progress read from what build tools print: make/cmake ``[ 45%]``, ninja ``[12/80]``,
cargo ``Building [===>  ] 45/80``. (``jc.progress``, the bar for Python loops, is in ``api``.)"""

from __future__ import annotations

import re
import time

from .operation import Operation

_PERCENT = re.compile(rb"\[\s*(\d{1,3})%\]")
_FRACTION = re.compile(rb"\[\s*(\d+)\s*/\s*(\d+)\s*\]|Building \[[=> ]*\] (\d+)/(\d+)")
#: Parse at most this often; a chatty build must not pay a regex per line.
INTERVAL = 0.1
_SCAN = 4096


class BuildProgress:
    """An output listener that turns the last progress marker into ``op.progress``."""

    def __init__(self) -> None:
        self._last = 0.0
        self._seen: tuple[float, float | None] | None = None

    def __call__(self, op: Operation, text: str) -> None:
        chunk = text[-_SCAN:].encode(errors="replace")
        found = self._find(chunk)
        if found is not None:
            self._seen = found
        now = time.monotonic()
        finished = found is not None and found[0] == found[1]  # never throttle away the last step
        if self._seen is not None and (finished or now - self._last >= INTERVAL):
            self._last = now
            n, total = self._seen
            if op.progress is None or (op.progress.get("n"), op.progress.get("total")) != (n, total):
                op.set_progress(n, total)

    @staticmethod
    def _find(chunk: bytes) -> tuple[float, float | None] | None:
        fractions = list(_FRACTION.finditer(chunk))
        percents = list(_PERCENT.finditer(chunk))
        last_fraction = fractions[-1] if fractions else None
        last_percent = percents[-1] if percents else None
        if last_fraction and (not last_percent or last_fraction.start() > last_percent.start()):
            groups = [g for g in last_fraction.groups() if g is not None]
            n, total = float(groups[0]), float(groups[1])
            return (n, total) if 0 < total and n <= total else None
        if last_percent:
            value = float(last_percent.group(1))
            return (value, 100.0) if value <= 100 else None
        return None
