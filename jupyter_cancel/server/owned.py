"""The trees the server ends itself, owned as a kernel owns its own: operations of a
server-side ``core.Registry``.

Two kinds of work come here: the trees a kernel that stopped answering had reported (ended by
their identity when its control channel is silent), and the work of a kernel without the
extension (found by scanning its processes: ``foreign``). Their states, exit codes, cancel
latency, unkillable pids and whether a trigger's policy applies are the registry's, by the same
code as in a kernel; each kernel's ``KernelLink`` only mirrors what it is told.

The registry lists none of them: each is made from what was reported at the moment the server
acts on it, and a kernel's link is the one list of that kernel's work (as the panel reads it).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from ..core.model import CancelReason, Policy, State, to_policy
from ..core.operation import Operation
from ..core.proctree import Tree
from ..core.registry import Registry
from ..core.runners import KnownTree
from .kernels import KernelLink


class ServerWork:
    """The server's registry of the trees it ends itself."""

    def __init__(self, grace: float) -> None:
        # No watchdog of its own: the server's shared watchdog covers the kernels' trees.
        self.registry = Registry(grace=grace, watchdog=False)
        #: One ``choose`` at a time (they may run on worker threads): what an earlier one chose
        #: is skipped by the next.
        self._choosing = threading.Lock()

    def _operation(self, data: dict[str, Any], grace: float | None = None) -> Operation:
        try:
            policy = to_policy(data.get("policy") or Policy.CANCEL.value)
        except ValueError:
            policy = Policy.CANCEL
        tags = data.get("tags")
        return self.registry.new(
            name=str(data.get("name") or data["id"])[:200],
            kind=str(data.get("kind") or "process"),
            policy=policy,
            grace=grace,
            owner={
                "kernel_id": data.get("kernel_id"),
                "cell_id": data.get("cell_id"),
                "client_session": data.get("client_session"),
                "tags": tags if isinstance(tags, dict) else None,
            },
            op_id=data["id"],
        )

    @staticmethod
    def _began(op: Operation, data: dict[str, Any]) -> None:
        if isinstance(data.get("started"), (int, float)):
            op.started = float(data["started"])  # when the work began, not when we saw it

    def choose(
        self, reported: Sequence[tuple[dict[str, Any], Tree]], why: CancelReason, *, by_id: bool
    ) -> list[Operation]:
        """The operations of ``reported`` (an operation's JSON and its tree) that ``why`` ends,
        marked as being cancelled (nothing is signalled yet: ``end`` does); those an earlier call
        is still ending are skipped, as a kernel's registry skips them. ``by_id``: named by id,
        ended whatever their policy (as a kernel would); otherwise the policy decides."""
        with self._choosing:
            ending = {op.id for op in self.registry.operations()}  # ended by an earlier call still
            ops = {}
            for data, tree in reported:
                if data["id"] in ending:
                    continue
                op = self._operation(data, tree.grace)
                self.registry.attach(op, KnownTree(tree))
                ops[op.id] = (op, data)
            chosen = self.registry.request_cancel([op for op, _ in ops.values()], why, force=by_id)
            for op in chosen:
                # Live from here to its end (then in the registry's bounded history).
                self.registry.register(op, announce=False)
                self._began(op, ops[op.id][1])
        return chosen

    def end(self, chosen: Sequence[Operation], *, wait: bool = True) -> list[Operation]:
        """End the trees of ``chosen`` together, as the registry ends any (SIGTERM, grace,
        SIGKILL, identity checked). Blocking: call it off the event loop. Without ``wait`` it
        returns once the SIGTERMs are out (``wait`` then waits for the ends)."""
        return self.registry.end_requested(chosen, wait=wait)

    def wait(self, chosen: Sequence[Operation]) -> list[Operation]:
        """Block until every operation of ``chosen`` ended (their ``end`` always gets there:
        SIGKILL after the grace); them."""
        for op in chosen:
            self.registry.wait(op)
        return list(chosen)

    async def end_mirrored(self, link: KernelLink, chosen: Sequence[Operation]) -> list[str]:
        """``end`` what ``choose`` chose of ``link``'s kernel, its link told each step (being
        cancelled now, ended once the tree is gone); the ids of what ended."""
        mirror(link, chosen, "cancel_requested")
        ended = await asyncio.get_running_loop().run_in_executor(None, self.end, chosen)
        return mirror(link, ended, "ended")

    def completed(self, data: dict[str, Any]) -> Operation:
        """A scan no longer finds the work ``data`` reported: it ended by itself."""
        op = self._operation(data)
        self._began(op, data)
        self.registry.finish(op, State.COMPLETED)
        return op


def mirror(link: KernelLink, ops: Sequence[Operation], event: str) -> list[str]:
    """(On the loop.) Tell ``link`` that each of ``ops`` went through ``event``; their ids."""
    for op in ops:
        link.mirror(op.to_json(pids=False), event)
    return [op.id for op in ops]
