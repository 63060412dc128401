"""Questions the server asks every kernel at once (bounded, concurrently): how its extension
and watchdog are, and what its running process trees cost now."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

from .kernels import KernelLink

#: How long a kernel has to answer (seconds): one that does not is reported as such.
ASK_TIMEOUT = 0.5


async def health(links: list[KernelLink], without_extension: Collection[str]) -> list[dict[str, Any]]:
    """Per kernel: extension answering, watchdog alive, running and stuck operations (a kernel
    in ``without_extension`` is not asked: nothing in it would answer)."""

    async def ask(link: KernelLink) -> dict[str, Any] | None:
        if link.kernel_id in without_extension:
            return None
        return await link.request({"action": "health"}, ASK_TIMEOUT)

    replies = await asyncio.gather(*(ask(link) for link in links))
    return [_health_of(link, reply) for link, reply in zip(links, replies, strict=True)]


def _health_of(link: KernelLink, reply: dict[str, Any] | None) -> dict[str, Any]:
    ok = reply is not None and reply.get("status") == "ok"
    answer = (reply or {}) if ok else {}
    watchdog = answer.get("watchdog")
    return {
        "kernel_id": link.kernel_id,
        "extension": ok,
        "watchdog_alive": bool(watchdog and watchdog.get("alive")),
        "watchdog_pid": watchdog.get("pid") if watchdog else None,
        "running": answer.get("running", len(link.live)) if ok else len(link.live),
        "overdue": list(answer.get("overdue") or []),
        "unkillable": list(answer.get("unkillable") or []),
    }


async def resources(links: list[KernelLink], kernel_id: str | None = None) -> dict[str, dict[str, Any]]:
    """What each running process tree costs now (CPU %, RSS, processes, peak, CPU seconds),
    asked of the kernels among ``links`` (only ``kernel_id``'s, if given) that run process
    work: sampled only when someone asks (the panel while it is open, ``?resources=1``). A
    kernel that does not answer is left out. Each sample is kept on the operation's view."""
    asked = [
        link
        for link in links
        if (kernel_id is None or link.kernel_id == kernel_id)
        and any(op.get("kind") == "process" for op in link.live.values())
    ]
    replies = await asyncio.gather(*(link.request({"action": "resources"}, ASK_TIMEOUT) for link in asked))
    out: dict[str, dict[str, Any]] = {}
    for link, reply in zip(asked, replies, strict=True):
        sampled = (reply or {}).get("resources") if (reply or {}).get("status") == "ok" else None
        if not isinstance(sampled, dict):
            continue
        for op_id, used in sampled.items():
            data = link.live.get(op_id)
            if data is not None and isinstance(used, dict):
                data["resources"] = used
                out[op_id] = used
    return out
