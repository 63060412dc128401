"""No frame of ours ends a user's traceback.

A SIGINT handler written in Python is a frame: the ``KeyboardInterrupt`` (or a cell stop's
``Cancelled``) it raises would end every interrupted cell's traceback in our code, where stock
ipykernel's C ``default_int_handler`` adds none. IPython's custom exception hook takes those two
exceptions, drops our trailing frames from the traceback itself (so ``%tb``, ``%debug`` and
``sys.last_traceback`` read as stock too) and shows it as IPython would have.
"""

from __future__ import annotations

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


class HiddenFrames:
    """Installs the hook on ``shell`` unless the user has a custom exception handler already."""

    def __init__(self, shell: Any, codes: frozenset[CodeType]) -> None:
        self.shell = shell
        self.codes = codes
        self.installed = False

    def install(self) -> None:
        if getattr(self.shell, "custom_exceptions", None) != ():
            return  # the user's own handler wins (IPython keeps one)
        self.shell.set_custom_exc((KeyboardInterrupt, Cancelled), self._show)
        self.installed = True

    def uninstall(self) -> None:
        if self.installed and self.shell.custom_exceptions == (KeyboardInterrupt, Cancelled):
            self.shell.set_custom_exc((), None)
        self.installed = False

    def _show(self, shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None) -> None:
        drop_trailing(tb, self.codes)
        # What IPython's run_code does for any other exception.
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset, running_compiled_code=True)
