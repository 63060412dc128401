"""Stopping one cell, not the kernel: its in-process Python and the sockets it opened.

A stop names a cell. If that cell is the one running, three things happen, in this order:

1. SIGINT goes to the main thread only (``pthread_kill``: no child process sees it), with a
   note saying which run it is for. The kernel extension's SIGINT handler finds the note and
   raises ``jc.Cancelled`` instead of ``KeyboardInterrupt``, and does *not* cancel the rest
   of the kernel's work. A note for a run that has ended meanwhile is dropped, and a SIGINT
   we sent is never taken for a real interrupt, however late it is handled;
2. every socket the running cell's code created (its own thread and the threads it started)
   is shut down: a blocked ``recv`` returns at once and the server sees the disconnect, so an
   LLM stream stops generating (``openai``, ``httpx``, ``requests``, ``urllib``, anything
   built on ``socket``; TLS included, the wrapped socket is a socket too). That waits until
   the main thread has handled the signal (at most ``SOCKETS_AFTER`` seconds: code in C that
   does not return to Python on a signal gets its sockets shut all the same), so the cell sees
   ``Cancelled``, not the library's error about a closed connection — nor a stream that ended
   cleanly at the shut socket before the handler ran, which would end the cell ``ok``;
3. the caller cancels the cell's operations as for any cell-scoped cancel.

Code in C that never returns to Python cannot be stopped this way: after ``bound`` seconds
the stop is reported (a ``cell_stuck`` iopub event), and the stop is repeated while the cell
runs (code that swallowed the first ``Cancelled`` in an ``except BaseException`` or a bare
``except`` gets another; ``except Exception`` does not catch it).
"""

from __future__ import annotations

import itertools
import signal
import socket
import threading
import weakref
from collections.abc import Callable
from typing import Any

from ..core.platform import current
from .host import current_owner

#: Seconds a stopped cell may keep running before it is reported stuck.
STUCK_AFTER = 2.0
#: How often a stop whose signal still waits for its thread to run is looked at again.
RECHECK = 0.25
#: Seconds a stop's sockets wait for the main thread to handle its signal before they are shut
#: down all the same.
SOCKETS_AFTER = 1.0


def _waits_to_run(tid: int | None, signum: int) -> bool:
    """Whether ``signum`` is still pending for thread ``tid`` and not blocked there: the thread
    has not run since it was sent (the machine is busy), so whether its code is C that never
    returns to Python cannot be told yet. A thread in C code has had the signal (its C handler
    ran) or blocks it. False where that cannot be read (no ``/proc``)."""
    if tid is None or not current().proc:
        return False
    try:
        with open(f"/proc/self/task/{tid}/status", "rb") as fh:
            fields = dict(line.split(b":", 1) for line in fh.read().splitlines() if b":" in line)
        bit = 1 << (signum - 1)
        return bool(int(fields[b"SigPnd"], 16) & bit) and not int(fields[b"SigBlk"], 16) & bit
    except (OSError, KeyError, ValueError):
        return False


class SocketTracker:
    """The sockets each running cell's code created, held weakly, by run."""

    def __init__(self) -> None:
        self._by_run: dict[int, weakref.WeakSet[socket.socket]] = {}
        self._lock = threading.Lock()
        self._original: Any = None

    def install(self) -> None:
        original = self._original = socket.socket.__init__
        tracker = self

        def __init__(sock: socket.socket, *args: Any, **kwargs: Any) -> None:
            original(sock, *args, **kwargs)
            tracker.created(sock)

        socket.socket.__init__ = __init__  # type: ignore[method-assign]

    def uninstall(self) -> None:
        if self._original is not None:
            socket.socket.__init__ = self._original  # type: ignore[method-assign]
            self._original = None

    def created(self, sock: socket.socket) -> None:
        owner = current_owner()
        run = owner.get("run") if owner else None
        if run is not None:  # (None: the kernel's own code, not a cell's)
            self.track(run, sock)

    def track(self, run: int, sock: socket.socket) -> None:
        with self._lock:
            self._by_run.setdefault(run, weakref.WeakSet()).add(sock)

    def of(self, run: int) -> list[weakref.ref[socket.socket]]:
        """The sockets ``run`` has created so far, weakly (a stop shuts these down a moment
        later, even if the run has ended by then: a thread the cell started may still read)."""
        with self._lock:
            return [weakref.ref(sock) for sock in self._by_run.get(run, ())]

    @staticmethod
    def shutdown(socks: list[weakref.ref[socket.socket]]) -> int:
        """Shut down (not close: the fd stays the owner's) each of ``socks`` still open."""
        done = 0
        for ref in socks:
            sock = ref()
            if sock is None or sock.fileno() < 0:
                continue  # closed, or detached into a TLS socket (tracked itself)
            try:
                sock.shutdown(socket.SHUT_RDWR)
                done += 1
            except OSError:
                pass  # not connected (a listener, or already gone)
        return done

    def forget(self, run: int) -> None:
        with self._lock:
            self._by_run.pop(run, None)


class CellStopper:
    """Which cell run is executing, and stop requests for it."""

    def __init__(
        self,
        on_stuck: Callable[[dict[str, Any]], None],
        stuck_after: float = STUCK_AFTER,
        sockets_after: float = SOCKETS_AFTER,
    ) -> None:
        self.sockets = SocketTracker()
        self.on_stuck = on_stuck
        self.stuck_after = stuck_after
        self.sockets_after = sockets_after
        self._runs = itertools.count(1)
        self._lock = threading.Lock()
        self._running: dict[str, Any] | None = None  # {"run", "cell_id"}
        self._pending: tuple[int, str] | None = None  # (run, reason) not yet raised
        self._signalled = False  # a SIGINT of ours not handled yet (SIGINTs coalesce)
        self._handled: threading.Event | None = None  # set when that SIGINT is handled
        self._main = threading.main_thread().ident
        self._main_tid = threading.main_thread().native_id

    def next_run(self) -> int:
        return next(self._runs)

    def started(self, run: int, cell_id: str | None) -> None:
        with self._lock:
            self._running = {"run": run, "cell_id": cell_id}
            self._pending = None

    def ended(self) -> None:
        with self._lock:
            run, self._running, self._pending = self._running, None, None
        if run is not None:
            self.sockets.forget(run["run"])

    def stop(self, cell_id: str, reason: str) -> bool:
        """Stop ``cell_id`` if it is the cell running now; True if it was."""
        with self._lock:
            running = self._running
            if running is None or running["cell_id"] != cell_id:
                return False
            run = running["run"]
            self._pending = (run, reason)
        self._fire(run, reason, 1)
        return True

    def claim(self) -> str | None:
        """In the SIGINT handler: the reason to raise ``Cancelled`` with, "" for a stop
        whose run has ended (nothing to raise), None if this SIGINT is a real interrupt."""
        with self._lock:
            pending, self._pending = self._pending, None
            ours, self._signalled = self._signalled, False
            handled, self._handled = self._handled, None
            running = self._running
        if handled is not None:
            handled.set()  # its sockets may go now: what this handler returns or raises comes first
        if pending is None:
            return "" if ours else None
        run, reason = pending
        return reason if running is not None and running["run"] == run else ""

    def _fire(self, run: int, reason: str, rounds: int) -> None:
        """SIGINT to the main thread, its sockets once it is handled (see the module's
        docstring), and a look again after the bound."""
        handled = threading.Event()
        if self._main is None:
            handled.set()
        else:
            with self._lock:
                self._signalled, self._handled = True, handled
            signal.pthread_kill(self._main, signal.SIGINT)
        socks = self.sockets.of(run)
        threading.Thread(
            target=self._shut, args=(handled, socks), name="jupyter-cancel-cellstop", daemon=True
        ).start()
        timer = threading.Timer(self.stuck_after, self._check, (run, reason, rounds))
        timer.daemon = True
        timer.start()

    def _shut(self, handled: threading.Event, socks: list[weakref.ref[socket.socket]]) -> None:
        handled.wait(self.sockets_after)
        self.sockets.shutdown(socks)

    def _check(self, run: int, reason: str, rounds: int, waited: float = 0.0) -> None:
        with self._lock:
            running = self._running
            if running is None or running["run"] != run:
                return  # it stopped
            native = self._pending is not None  # the signal was never handled: in C code...
            if native and waited < self.stuck_after and _waits_to_run(self._main_tid, signal.SIGINT):
                # ... unless the thread has not run since (a busy machine): look again soon.
                timer = threading.Timer(RECHECK, self._check, (run, reason, rounds, waited + RECHECK))
                timer.daemon = True
                timer.start()
                return
            self._pending = (run, reason)
        if rounds == 1:
            self.on_stuck(
                {"cell_id": running["cell_id"], "seconds": self.stuck_after, "in_native_code": native}
            )
        self._fire(run, reason, rounds + 1)
