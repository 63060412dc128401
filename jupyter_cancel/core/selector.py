"""The one value naming what to cancel: used by the registry, the control message and the
server's REST bodies alike, so all of them validate and match the same way."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .model import short, to_text

#: Most ids one selector may name (a request naming more is refused, not truncated).
MAX_IDS = 1000
FIELDS = ("operation_ids", "cell_id", "client_session", "kernel_id", "all")


@dataclasses.dataclass(frozen=True)
class Selector:
    """Live operations matching every given field; ``all=True`` with no field: every one.

    An empty selector (no field, ``all`` False) matches nothing, so a malformed request can
    never turn into "cancel everything".
    """

    operation_ids: tuple[str, ...] | None = None
    cell_id: str | None = None
    client_session: str | None = None
    kernel_id: str | None = None
    all: bool = False

    @property
    def empty(self) -> bool:
        return not self.all and all(
            getattr(self, name) is None
            for name in ("operation_ids", "cell_id", "client_session", "kernel_id")
        )

    def filters(self) -> dict[str, Any]:
        """Keyword filters for ``Registry.select``."""
        out: dict[str, Any] = {}
        if self.operation_ids is not None:
            out["ids"] = self.operation_ids
        for name in ("cell_id", "client_session", "kernel_id"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    def matches(self, op: Mapping[str, Any]) -> bool:
        """Whether an operation's JSON matches (the server's view of a kernel's work)."""
        if self.empty:
            return False
        if self.operation_ids is not None and op.get("id") not in self.operation_ids:
            return False
        return all(
            getattr(self, name) is None or op.get(name) == getattr(self, name)
            for name in ("cell_id", "client_session", "kernel_id")
        )

    def to_json(self) -> dict[str, Any]:
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
