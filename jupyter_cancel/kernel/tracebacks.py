"""No frame of ours ends a user's traceback.

A SIGINT handler written in Python is a frame: the ``KeyboardInterrupt`` (or a cell stop's
``Cancelled``) it raises would end every interrupted cell's traceback in our code, where stock
ipykernel's C ``default_int_handler`` adds none. IPython's custom exception hook takes those two
exceptions, drops our trailing frames from the traceback itself (so ``%tb``, ``%debug`` and
``sys.last_traceback`` read as stock too) and shows it as IPython would have. An interrupt that
lands outside the cell's code (while IPython compiles its next statement, say) is shown by
IPython's ``showtraceback`` without that hook: the shell's ``showtraceback`` drops them too.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import CodeType, TracebackType
from typing import Any

from ..core.errors import Cancelled


def drop_trailing(tb: TracebackType | None, codes: frozenset[CodeType]) -> None:
    """Cut the trailing entries of ``tb`` whose code is one of ``codes`` (never the first)."""
    while tb is not None:
        prev, last = None, tb
        while last.tb_next is not None:
            prev, last = last, last.tb_next
        if prev is None or last.tb_frame.f_code not in codes:
            return
        prev.tb_next = None


def cancelled_in(value: BaseException | None) -> Cancelled | None:
    """A ``Cancelled`` that ``value`` was raised while handling (a library that wraps any
    exception of its call, as py4j does, wraps our cell stop too)."""
    seen: set[int] = set()
    while value is not None and id(value) not in seen:
        if isinstance(value, Cancelled):
            return value
        seen.add(id(value))
        value = value.__cause__ or value.__context__
    return None


class HiddenFrames:
    """Installs the hook on ``shell`` unless the user has a custom exception handler already.

    ``stopped()``: the stop (``Cancelled``) or interrupt (``KeyboardInterrupt``) that ended the
    running cell's library work, if one did: an error such work raises because of it shows as
    that stop or interrupt."""

    OURS: tuple[type[BaseException], ...] = (KeyboardInterrupt, Cancelled)

    def __init__(
        self,
        shell: Any,
        codes: frozenset[CodeType],
        stopped: Callable[[], BaseException | None] = lambda: None,
    ) -> None:
        self.shell = shell
        self.codes = codes
        self.stopped = stopped
        self.installed = False
        self.types = self.OURS
        self._showtraceback: Any = None
        self._wrapper: Any = None
        self._had_own = False

    def install(self) -> None:
        self._wrap_showtraceback()
        if getattr(self.shell, "custom_exceptions", None) != ():
            return  # the user's own handler wins (IPython keeps one)
        self.shell.set_custom_exc(self.types, self._show)
        self.installed = True

    def _wrap_showtraceback(self) -> None:
        original = getattr(self.shell, "showtraceback", None)
        if original is None or self._showtraceback is not None:
            return
        codes, ours = self.codes, self.OURS

        def showtraceback(exc_tuple: Any = None, *args: Any, **kwargs: Any) -> Any:
            value, tb = (exc_tuple[1], exc_tuple[2]) if exc_tuple else sys.exc_info()[1:]
            if isinstance(value, ours):
                drop_trailing(tb, codes)
            return original(exc_tuple, *args, **kwargs)

        self._showtraceback, self._wrapper = original, showtraceback
        self._had_own = "showtraceback" in vars(self.shell)
        self.shell.showtraceback = showtraceback

    def also(self, types: tuple[type[BaseException], ...]) -> None:
        """Take these library error types too (a stop of the work they wrap shows as one)."""
        new = tuple(t for t in types if t not in self.types)
        if not new or not self.installed or self.shell.custom_exceptions != self.types:
            return
        self.types = self.types + new
        self.shell.set_custom_exc(self.types, self._show)

    def uninstall(self) -> None:
        if self._showtraceback is not None and vars(self.shell).get("showtraceback") is self._wrapper:
            if self._had_own:
                self.shell.showtraceback = self._showtraceback
            else:
                del self.shell.showtraceback  # the class's method again
        self._showtraceback = self._wrapper = None
        if self.installed and self.shell.custom_exceptions == self.types:
            self.shell.set_custom_exc((), None)
        self.installed = False
        self.types = self.OURS

    def _show(self, shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None) -> None:
        if not isinstance(value, self.OURS):
            ours: BaseException | None = cancelled_in(value) or self.stopped()
            if ours is not None:
                etype, value, tb = type(ours), ours, ours.__traceback__
        drop_trailing(tb, self.codes)
        # What IPython's run_code does for any other exception.
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset, running_compiled_code=True)
