"""States, policies, reasons and the validation of user-supplied values."""

from __future__ import annotations

import dataclasses
import enum
import math


class State(str, enum.Enum):
    """``pending → running → completed | failed | cancelled``."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        return self in _DONE

    def __str__(self) -> str:
        return self.value


_DONE = frozenset({State.COMPLETED, State.FAILED, State.CANCELLED})


class Policy(str, enum.Enum):
    """Which triggers apply to an operation.

    ``cancel``: every trigger. ``continue``: all but a closed tab / lost client.
    ``kernel``: lives as long as the kernel — a session or server a library (or the user) keeps
    for later cells: not ended by a re-run, a deleted cell, an interrupt or a closed tab; ended
    by restart, shutdown, the kernel's death, the server's stop and an explicit cancel.
    ``detach``: only an explicit cancel; survives kernel exit.
    """

    CANCEL = "cancel"
    CONTINUE = "continue"
    KERNEL = "kernel"
    DETACH = "detach"

    def __str__(self) -> str:
        return self.value


class Reason:
    """What triggered a cancel (its *source*). Policies decide on these alone; free text a
    caller gives is kept apart as the cancel's message (see ``CancelReason``)."""

    USER = "user"
    CELL_RERUN = "cell_rerun"
    CELL_DELETED = "cell_deleted"
    KERNEL_INTERRUPT = "kernel_interrupt"
    KERNEL_RESTART = "kernel_restart"
    KERNEL_SHUTDOWN = "kernel_shutdown"
    KERNEL_DIED = "kernel_died"
    CLIENT_DISCONNECTED = "client_disconnected"
    TAB_CLOSED = "tab_closed"
    TIMEOUT = "timeout"
    SERVER_SHUTDOWN = "server_shutdown"
    SUPERSEDED = "superseded"
    RELEASED = "released"
    WORKER_CLOSING = "worker_closing"


#: A reason in words, as a cell's one-line stop and the widget and panel show it (the
#: labextension's ``describeReason`` has the same table; a test keeps them equal).
REASON_WORDS = {
    Reason.USER: "by you",
    Reason.CELL_RERUN: "cell re-run",
    Reason.CELL_DELETED: "cell deleted",
    Reason.KERNEL_INTERRUPT: "kernel interrupted",
    Reason.KERNEL_RESTART: "kernel restarted",
    Reason.KERNEL_SHUTDOWN: "kernel shut down",
    Reason.KERNEL_DIED: "kernel died",
    Reason.CLIENT_DISCONNECTED: "browser disconnected",
    Reason.TAB_CLOSED: "notebook closed",
    Reason.TIMEOUT: "timed out",
    Reason.SERVER_SHUTDOWN: "server stopped",
}


def describe(reason: str) -> str:
    return REASON_WORDS.get(reason, reason)


#: Every source a cancel may name.
SOURCES = frozenset(v for k, v in vars(Reason).items() if k.isupper() and isinstance(v, str))


#: Reasons a policy shields an operation from.
_SHIELDED: dict[Policy, frozenset[str]] = {
    Policy.CANCEL: frozenset(),
    Policy.CONTINUE: frozenset({Reason.CLIENT_DISCONNECTED, Reason.TAB_CLOSED}),
    Policy.KERNEL: frozenset(
        {
            Reason.CELL_RERUN,
            Reason.CELL_DELETED,
            Reason.KERNEL_INTERRUPT,
            Reason.CLIENT_DISCONNECTED,
            Reason.TAB_CLOSED,
        }
    ),
    Policy.DETACH: frozenset(
        {
            Reason.CELL_RERUN,
            Reason.CELL_DELETED,
            Reason.KERNEL_INTERRUPT,
            Reason.KERNEL_RESTART,
            Reason.KERNEL_SHUTDOWN,
            Reason.KERNEL_DIED,
            Reason.CLIENT_DISCONNECTED,
            Reason.TAB_CLOSED,
            Reason.SERVER_SHUTDOWN,
        }
    ),
}

#: Exit code reported by every cancelled operation (like a shell's Ctrl+C).
CANCELLED_EXIT_CODE = 130
DEFAULT_GRACE = 2.0


def applies(policy: Policy, reason: str) -> bool:
    """Whether a trigger with ``reason`` cancels work under ``policy``."""
    return reason not in _SHIELDED[policy]


def to_policy(value: object) -> Policy:
    """Validate a policy; raise ``ValueError`` naming the bad value."""
    try:
        return Policy(value)
    except ValueError:
        allowed = ", ".join(p.value for p in Policy)
        raise ValueError(f"policy must be one of {allowed}, not {short(value)}") from None


def to_grace(value: object) -> float:
    """Validate a grace period in seconds (0 to 3600)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"grace must be a number of seconds, not {short(value)}")
    grace = float(value)
    if math.isnan(grace) or not 0 <= grace <= 3600:
        raise ValueError(f"grace must be between 0 and 3600 seconds, not {short(value)}")
    return grace


def to_timeout(value: object) -> float | None:
    """Validate an optional timeout in seconds (> 0)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"timeout must be a number of seconds or None, not {short(value)}")
    timeout = float(value)
    if math.isnan(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be positive, not {short(value)}")
    return timeout


#: Longest text a user may send as a reason or id; error messages quote at most ``QUOTE``.
MAX_TEXT = 200
QUOTE = 60


def short(value: object) -> str:
    """``repr(value)`` cut to ``QUOTE`` characters: errors and logs never echo input unbounded."""
    if isinstance(value, str) and len(value) > QUOTE:
        return repr(value[:QUOTE]) + f"… ({len(value)} chars)"
    if isinstance(value, (list, dict, tuple)) and len(value) > 8:
        return f"a {type(value).__name__} of {len(value)} items"
    text = repr(value)
    return text if len(text) <= QUOTE else text[:QUOTE] + "…"


def to_text(value: object, what: str) -> str:
    """Validate a user-supplied string: at most ``MAX_TEXT`` characters, valid Unicode
    (a lone surrogate such as ``"\\ud800"`` cannot be sent on to a kernel or a log)."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, not {type(value).__name__}")
    if len(value) > MAX_TEXT:
        raise ValueError(f"{what} must be at most {MAX_TEXT} characters, not {len(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode (a lone surrogate)") from None
    return value


def to_reason(value: object) -> str:
    """Validate a cancel reason: a non-empty string of at most 200 characters."""
    reason = to_text(value, "reason")
    if not reason.strip():
        raise ValueError("reason must not be empty")
    return reason


@dataclasses.dataclass(frozen=True)
class CancelReason:
    """A cancel's source (a ``Reason``: what triggered it) and the caller's free text.

    ``CancelReason.of("kernel_interrupt")`` names a source; any other text is a user's
    cancel carrying that text as its message (``of("stop button")`` → source ``user``,
    message ``"stop button"``), so a string can never borrow a trigger's policy rules.
    """

    source: str
    message: str | None = None

    @classmethod
    def of(cls, value: object) -> CancelReason:
        if isinstance(value, CancelReason):
            return value
        text = to_reason(value)
        return cls(text) if text in SOURCES else cls(Reason.USER, text)

    @classmethod
    def user(cls, text: str) -> CancelReason:
        """A person's cancel, with their words as its message: never a trigger's source,
        whatever the words (what a REST body's ``reason`` is)."""
        return cls(Reason.USER, None if text == Reason.USER else text)

    def to_json(self) -> dict[str, str | None]:
        """As it travels (the kernel↔server wire): typed, so no hop re-derives the source."""
        return {"source": self.source, "message": self.message}

    @classmethod
    def from_json(cls, value: object) -> CancelReason:
        """A reason off the wire: ``{"source", "message"}`` as ``to_json`` made it, or a bare
        string (``of``: a source by name, any other text a user's message)."""
        if not isinstance(value, dict):
            return cls.of(value)
        unknown = set(value) - {"source", "message"}
        if unknown:
            raise ValueError(f"reason has unknown keys: {short(sorted(unknown))}")
        source = to_reason(value.get("source"))
        if source not in SOURCES:
            raise ValueError(
                f"reason source must be one of {', '.join(sorted(SOURCES))}, not {short(source)}"
            )
        message = value.get("message")
        return cls(source, None if message is None else to_reason(message))

    def words(self) -> str:
        """What a one-line note shows: the caller's message, else the source."""
        return self.message or self.source

    def __str__(self) -> str:
        return self.source if self.message is None else f"{self.source}: {self.message}"
