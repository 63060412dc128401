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
    rates: list[TokenRate] = []

    def on_start(op: Operation) -> None:
        rate = TokenRate(op)
        rates.append(rate)
        op.on_output(lambda _op, text: rate.add(text))

    try:
        # run: the same wait, Ctrl+C and one-line Cancelled as jc.run.
        return api.run(
            cmd,
            name=name or "LLM",
            timeout=llm_timeout(timeout),
            shell=shell,
            cwd=cwd,
            env=env,
            grace=grace,
            on_start=on_start,
            **kwargs,
        )
    finally:
        for rate in rates:
            rate.report()
