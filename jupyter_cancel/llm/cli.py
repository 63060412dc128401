"""Stream tokens from an LLM command-line program (llama-cli, ``ollama run``, ``llm``, ...)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ..core import api
from ..core.operation import Operation
from .config import llm_timeout
from .rate import TokenRate


def stream_cli(
    cmd: str | Sequence[str],
    *,
    name: str | None = None,
    timeout: float | None = None,
    shell: bool = False,
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    grace: float | None = None,
    **kwargs: Any,
) -> Operation:
    """Run an LLM CLI as an operation: live tokens, tokens/s, cancel kills the whole tree.

    Blocks until it ends; returns the Operation (``.output`` holds the text, bounded).
    Raises ``Cancelled`` on stop, re-run, interrupt or ``timeout`` (reason ``timeout``).
    """
    limit = llm_timeout(timeout)
    op = api.start(
        cmd, name=name or "LLM", timeout=limit, shell=shell, cwd=cwd, env=env, grace=grace, **kwargs
    )
    rate = TokenRate(op)
    op.on_output(lambda _op, text: rate.add(text))
    try:
        op.wait()
    except KeyboardInterrupt:
        op.cancel("kernel_interrupt")
        raise
    rate.report()
    api.host().finished(op)
    return op.result()
