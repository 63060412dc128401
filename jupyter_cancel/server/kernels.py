"""One server-side link per kernel: control requests with a timeout, and the live view of
the kernel's operations kept from its ``jupyter_cancel_event`` iopub messages (no polling)."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any

from ..protocol import EVENT, REPLY, REQUEST
from . import adapter

log = logging.getLogger(__name__)

EventSink = Callable[[str, str, dict[str, Any]], None]
#: Finished operations a kernel's view keeps for listing.
HISTORY = 200
_ENDED = ("completed", "failed", "cancelled")


class KernelLink:
    """Talks to one kernel on its control channel and listens to its iopub."""

    def __init__(self, kernel_id: str, manager: Any, on_event: EventSink) -> None:
        self.kernel_id = kernel_id
        self.manager = manager
        self.session = manager.session
        self.on_event = on_event
        self.live: dict[str, dict[str, Any]] = {}
        self.done: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._control: Any = None
        #: The kernel has answered before (its extension is loaded) and its last request went
        #: unanswered: hung, stopped or dying. A kernel that never answers (another language,
        #: extension not loaded yet) is never called stalled.
        self.stalled = False
        self._answered = False
        self._iopub: Any = None
        #: Our iopub subscription is live (a first message came); what the kernel published
        #: before that never reached us.
        self._joined = False
        #: When the kernel first went busy (the stamp on its first ``status: busy``): it starts
        #: handling requests then, so a child it started before that is its own helper.
        self.first_busy: float | None = None

    def connect(self) -> None:
        """Our control and iopub streams; their messages are handled on the server's loop
        (the loop this is called on), whichever thread the manager's streams run on."""
        loop = asyncio.get_event_loop()
        self._control = self.manager.connect_control()
        self._control.on_recv(adapter.on_loop(loop, self._on_control))
        self._iopub = self.manager.connect_iopub()
        self._iopub.on_recv(adapter.on_loop(loop, self._on_iopub))

    def close(self) -> None:
        for stream in (self._control, self._iopub):
            if stream is not None and not stream.closed():
                stream.close()
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        self._pending.clear()

    # -- the view --------------------------------------------------------------
    def operations(self) -> list[dict[str, Any]]:
        return list(self.done.values()) + list(self.live.values())

    def get(self, op_id: str) -> dict[str, Any] | None:
        return self.live.get(op_id) or self.done.get(op_id)

    def _update(self, data: dict[str, Any], event: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """Merge what the kernel said of one operation; return the events to publish.

        The published sequence of every operation is ``started`` → (``cancel_requested``) →
        ``ended``, each once, whatever order the kernel's events and list replies arrive in:
        an operation first seen mid-life (a lost iopub message, a list reply) is announced as
        ``started``; a late ``started`` or a second ``ended`` is dropped.
        """
        op_id = data.get("id")
        if not isinstance(op_id, str):
            return []
        data = dict(data, kernel_id=data.get("kernel_id") or self.kernel_id)
        out: list[tuple[str, dict[str, Any]]] = []
        if op_id in self.done:
            return out  # ended already: nothing after that
        ended = data.get("state") in _ENDED
        previous = self.live.get(op_id)
        if previous is None:
            if event is None and not ended and data.get("state") not in ("pending", "running"):
                return out
            first = dict(data, state="running", reason=None) if ended else data
            self.live[op_id] = first
            out.append(("started", first))
        elif previous.get("root") and not data.get("root"):
            data["root"], data["cgroup"] = previous["root"], previous.get("cgroup")
        if ended:
            announced = (previous or {}).get("_cancel_announced")
            if data.get("state") == "cancelled" and not announced:
                # Its cancel_requested event is still on its way (iopub and the control reply
                # are not ordered) or was lost: the sequence stays started → cancel_requested → ended.
                out.append(("cancel_requested", dict(data, state="running")))
            self.live.pop(op_id, None)
            self.done[op_id] = data
            while len(self.done) > HISTORY:
                self.done.popitem(last=False)
            out.append(("ended", data))
            return out
        if previous is not None:
            if event == "cancel_requested" and previous.get("_cancel_announced"):
                event = None
            self.live[op_id] = dict(data, _cancel_announced=previous.get("_cancel_announced"))
        if event == "cancel_requested":
            self.live[op_id]["_cancel_announced"] = True
            out.append(("cancel_requested", self.live[op_id]))
        elif event not in (None, "started"):
            out.append((event, self.live[op_id]))
        return out

    def observe(self, data: dict[str, Any], event: str | None = None) -> None:
        """Merge what the server saw itself of one operation (a foreign kernel's process)."""
        self._publish(self._update(data, event))

    def cancelling(self, op_id: str) -> bool:
        """Its cancel was announced and its end was not yet: whoever cancels it reports that end."""
        return bool((self.live.get(op_id) or {}).get("_cancel_announced"))

    def mirror(self, data: dict[str, Any], event: str | None = None) -> None:
        """What the server's own registry says of one of this kernel's operations (it ended
        that work itself), over what the kernel or a scan reported of it."""
        self.observe(dict(self.get(data["id"]) or {}, **data), event)

    def _publish(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        for event, data in events:
            self.on_event(self.kernel_id, event, data)

    # -- messages --------------------------------------------------------------
    def _deserialize(self, msg_list: list[Any]) -> dict[str, Any] | None:
        try:
            _, parts = self.session.feed_identities(msg_list)
            return self.session.deserialize(parts)
        except Exception:
            log.debug("undecodable message from kernel %s", self.kernel_id, exc_info=True)
            return None

    def _on_iopub(self, msg_list: list[Any]) -> None:
        msg = self._deserialize(msg_list)
        if msg is None:
            return
        if not self._joined:
            self._join(msg)
        if self.first_busy is None and msg["header"].get("msg_type") == "status":
            if (msg.get("content") or {}).get("execution_state") == "busy":
                self.first_busy = adapter.reply_stamp(msg)
            return
        if msg["header"].get("msg_type") != EVENT:
            return
        content = msg.get("content") or {}
        events = content.get("events")
        for item in events if isinstance(events, list) else [content]:
            if not isinstance(item, dict):
                continue
            data, event = item.get("operation"), item.get("event")
            if isinstance(data, dict) and isinstance(event, str):
                self._publish(self._update(data, event))

    def _on_control(self, msg_list: list[Any]) -> None:
        msg = self._deserialize(msg_list)
        if msg is None or msg["header"].get("msg_type") != REPLY:
            return
        fut = self._pending.pop(msg["parent_header"].get("msg_id", ""), None)
        content = msg.get("content") or {}
        for data in content.get("operations") or []:
            if isinstance(data, dict):
                self._publish(self._update(data))
        if fut is not None and not fut.done():
            fut.set_result(content)

    def _join(self, msg: dict[str, Any]) -> None:
        """Our subscription is live once the kernel's first status reaches us. Unless the
        kernel was only ``starting`` then (nothing of ours can have been published before), ask
        for its listing. Only on a status of the kernel's own: a control request makes ipykernel
        publish ``busy`` and ``idle``, and jupyter_server would show a kernel nobody has used
        yet as ``idle`` instead of ``starting`` (an ``iopub_welcome`` or what the extension
        publishes as it loads come before any status)."""
        if msg["header"].get("msg_type") != "status":
            return
        self._joined = True
        if (msg.get("content") or {}).get("execution_state") != "starting":
            self._ask_for_listing()  # the events we missed before we joined

    def _ask_for_listing(self) -> None:
        """A SUB socket receives nothing until its subscription reaches the kernel (ZMQ's slow
        joiner): the events of work that started and ended meanwhile would never be seen. So
        once a first message shows we have joined, the kernel's listing (ended work too) fills
        the gap; its reply goes through ``_on_control`` like any, and ``_update`` keeps each
        operation's sequence whatever order the reply and the events come in. Only for a kernel
        with the extension; nothing waits for the reply (no ``stalled`` from it)."""
        if self._answered and self._control is not None and not self._control.closed():
            self.session.send(self._control, self.session.msg(REQUEST, {"action": "list"}))

    def answered(self) -> None:
        """The kernel runs the extension (it was started with it): from now on a request it
        leaves unanswered makes it stalled."""
        self._answered = True

    async def request(self, content: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        """Send a ``jupyter_cancel_request``; its reply content, or None if none came in time."""
        if self._control is None or self._control.closed():
            return None
        msg = self.session.msg(REQUEST, content)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg["header"]["msg_id"]] = fut
        self.session.send(self._control, msg)
        try:
            reply = await asyncio.wait_for(fut, timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            self._pending.pop(msg["header"]["msg_id"], None)
            self.stalled = self._answered
            return None
        self._answered, self.stalled = True, False
        return reply
