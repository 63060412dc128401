from __future__ import annotations

import time

from ..core.operation import Operation


class TokenRate:
    """Counts tokens (whitespace-separated pieces as they stream) and reports tokens/s."""

    def __init__(self, op: Operation) -> None:
        self.op = op
        self.tokens = 0
        self.started = time.monotonic()
        self._last = 0.0

    def add(self, text: str) -> None:
        self.tokens += max(1, len(text.split())) if text.strip() else 0
        now = time.monotonic()
        if now - self._last >= 0.1:
            self._last = now
            self.report()

    @property
    def per_second(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.tokens / elapsed if elapsed > 0 else 0.0

    def report(self) -> None:
        self.op.set_progress(self.tokens, None, rate=f"{self.per_second:.1f} tok/s")
