"""``llm_timeout``: default 300 s, allowed 10–3600; the server sets it for kernels it starts."""

from __future__ import annotations

import math
import os

ENV = "JUPYTER_CANCEL_LLM_TIMEOUT"
DEFAULT = 300.0
LOW, HIGH = 10.0, 3600.0


def llm_timeout(value: float | None = None) -> float:
    """The timeout to use: ``value`` if given (any positive number: the caller knows), else
    the server's ``JupyterCancel.llm_timeout`` (10–3600, checked there), else 300 s."""
    if value is None:
        raw = os.environ.get(ENV)
        configured = float(raw) if raw else DEFAULT
        return configured if LOW <= configured <= HIGH else DEFAULT
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {value!r}")
    return float(value)
