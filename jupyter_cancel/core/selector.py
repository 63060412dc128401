"""The one value naming what to cancel: used by the registry (``Registry.select``), the
control message and the server's REST bodies alike, so all of them validate and match the
same way. Empty means nothing; everything is said explicitly (``all=True``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .model import short, to_text

if TYPE_CHECKING:
    from .operation import Operation

#: Most ids one selector may name (a request naming more is refused, not truncated).
MAX_IDS = 1000
FIELDS = ("operation_ids", "cell_id", "client_session", "kernel_id", "all")
#: The fields that narrow a selection (``all`` widens it).
_MATCHED = ("operation_ids", "cell_id", "client_session", "kernel_id", "key")


@dataclasses.dataclass(frozen=True)
class Selector:
    """Live operations matching every given field; ``all=True`` with no field: every one.

    An empty selector (no field, ``all`` False) matches nothing, so a malformed request can
    never turn into "cancel everything". ``cell_id`` may name several cells (a tuple: the
    cells a notebook deleted); ``key`` (``jc.start(key=…)``) is the registry's own, never sent.
    """

    operation_ids: tuple[str, ...] | None = None
    cell_id: str | tuple[str, ...] | None = None
    client_session: str | None = None
    kernel_id: str | None = None
    key: str | None = None
    all: bool = False

    @property
    def empty(self) -> bool:
        return not self.all and all(getattr(self, name) is None for name in _MATCHED)

    def admits(self, op: Operation) -> bool:
        """Whether a live operation of this process matches."""
        return self._fields_match(lambda name: op.id if name == "id" else getattr(op, name, None))

    def matches(self, op: Mapping[str, Any]) -> bool:
        """Whether an operation's JSON matches (the server's view of a kernel's work)."""
        return self._fields_match(op.get)

    def _fields_match(self, get: Any) -> bool:
        if self.empty:
            return False
        if self.operation_ids is not None and get("id") not in self.operation_ids:
            return False
        if isinstance(self.cell_id, tuple):
            if get("cell_id") not in self.cell_id:
                return False
        elif self.cell_id is not None and get("cell_id") != self.cell_id:
            return False
        return all(
            getattr(self, name) is None or get(name) == getattr(self, name)
            for name in ("client_session", "kernel_id", "key")
        )

    def to_json(self) -> dict[str, Any]:
        if isinstance(self.cell_id, tuple) or self.key is not None:
            raise ValueError("a selector of several cells or of a key is not sent")
        out: dict[str, Any] = {
            name: getattr(self, name) for name in FIELDS[:-1] if getattr(self, name) is not None
        }
        if self.operation_ids is not None:
            out["operation_ids"] = list(self.operation_ids)
        if self.all:
            out["all"] = True
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Selector:
        """Validate the selector fields of a request body; ``ValueError`` with a short message."""
        ids = data.get("operation_ids")
        if ids is not None:
            if not isinstance(ids, list):
                raise ValueError(f"operation_ids must be a list of strings, not {short(ids)}")
            if len(ids) > MAX_IDS:
                raise ValueError(f"operation_ids names {len(ids)} ids; at most {MAX_IDS}")
            ids = tuple(to_text(i, "operation_ids[]") for i in ids)
        everything = data.get("all", False)
        if not isinstance(everything, bool):
            raise ValueError(f"all must be a boolean, not {short(everything)}")
        texts = {
            name: to_text(data[name], name) if data.get(name) is not None else None
            for name in ("cell_id", "client_session", "kernel_id")
        }
        return cls(operation_ids=ids, all=everything, **texts)
