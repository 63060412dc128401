"""Capture: every child process this Python process starts, by any route, is reported.

Installed by the kernel extension (on by default); no Jupyter imports. Each route that
creates a child is wrapped at its Python entry point, the child is tagged with the
operation's environment cookie (so its whole tree is found, escapes included; see
``begin``) and reported to ``spawned(token, pid, argv, popen)`` right after it exists:

* ``subprocess.Popen`` — and so ``subprocess.run/call/check_output``, ``asyncio``'s
  subprocesses, ``%%bash`` and every library built on them;
* ``os.system`` — run through ``Popen`` (same return value, a wait status);
* ``os.posix_spawn`` / ``os.posix_spawnp``;
* ``os.fork`` / ``os.forkpty`` — and so ``multiprocessing``'s ``fork`` start method and
  ``pty``; the child sets the cookie in its own environment;
* ``multiprocessing``'s ``spawn`` / ``forkserver`` start methods (``util.spawnv_passfds``).

Not seen: C code that calls ``fork()`` itself (a stretch goal: PEP 578 audit events fire
before the fork, without the child's pid). Our own helpers (the watchdog, ``jc.start``'s
spawn) run inside ``suspended()``; callers in ``ipykernel``, ``jupyter_client``, ``debugpy``
and ``zmq`` (the kernel's own machinery) are never captured.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing.util
import os
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from .model import Policy, State
from .operation import new_id
from .proctree import COOKIE, is_protected
from .starts import adopt_process, expect_spawn

if TYPE_CHECKING:
    from .adoption import Expected
    from .registry import Registry

#: Callers whose spawns are the kernel's own machinery, never the user's work.
OWN_MACHINERY = ("ipykernel", "jupyter_client", "debugpy", "zmq", "tornado", "jupyter_cancel.core")
#: Libraries whose spawns are a session's helper, kept for later cells: Spark's driver JVM
#: (classic, and the local Spark Connect server: both through ``launch_gateway``), Ray's
#: ``ray.init`` head processes. They get the ``kernel`` policy and the kernel as owner (not
#: the cell that happened to make the session): an interrupt, a re-run or a closed tab leaves
#: them to the library, a restart or shutdown ends them. Add a module prefix here (or use
#: ``jc.policy("kernel")`` around your own server's start) for others.
HELPER_LIBRARIES = ("pyspark.java_gateway", "ray._private")
_local = threading.local()
log = logging.getLogger(__name__)
#: Held by every spawn that passes on the process environment (``env=None``, ``fork``) while
#: a captured one has its cookie in it: the child of a captured spawn sees the real environment
#: of the moment (``os.putenv``, C ``setenv``, a ``preexec_fn``'s changes) plus the cookie, and
#: no other spawn inherits that cookie.
_ENV_LOCK = threading.Lock()


def _libc_putenv() -> Callable[[bytes], int] | None:
    """The C library's ``putenv``, which makes the string it is given the environment's entry.
    ``os.putenv`` calls ``setenv``, which copies it — and glibc keeps every value it was ever
    given to ``setenv`` (so that it can reuse them): a new cookie per spawn leaked ~80 bytes
    a spawn (16 MB in 200,000), for the life of the kernel."""
    try:
        putenv = ctypes.CDLL(None).putenv
    except (OSError, AttributeError):
        return None
    putenv.argtypes = [ctypes.c_char_p]
    putenv.restype = ctypes.c_int
    return cast("Callable[[bytes], int]", putenv)


_PUTENV = _libc_putenv()
_COOKIE_ENTRY = COOKIE.encode() + b"="
#: (Under ``_ENV_LOCK``.) The entries given to ``putenv`` that the C environment may still point
#: to: each is held until a later ``putenv`` replaced it there. Never one a restore that a stop
#: landing in the middle (a ``KeyboardInterrupt`` between two calls) left in the environment,
#: freed under it.
_HELD: list[bytes] = []


def _put_cookie(op_id: str) -> str | None:
    """(Under ``_ENV_LOCK``.) The cookie in the C environment (not in ``os.environ``) for one
    spawn; what ``_take_cookie`` puts back."""
    previous = os.environ.get(COOKIE)
    if _PUTENV is not None:
        entry = _COOKIE_ENTRY + op_id.encode()  # (immutable, NUL-terminated: the entry itself)
        _HELD.append(entry)  # (held before it is given: a stop may land right after)
        if _PUTENV(entry) == 0:
            del _HELD[:-1]  # the earlier ones were replaced by it, if still there
            return previous
    os.putenv(COOKIE, op_id)
    return previous


def _take_cookie(previous: str | None) -> None:
    """(Under ``_ENV_LOCK``.) The C environment's cookie as it was before ``_put_cookie``."""
    if previous is None:
        os.unsetenv(COOKIE)
    else:
        os.putenv(COOKIE, previous)  # (the same value every time: stored once)


@contextlib.contextmanager
def _cookie_in_environ(op_id: str) -> Iterator[None]:
    """The cookie in the C environment for one spawn."""
    with _ENV_LOCK:
        previous = _put_cookie(op_id)
        try:
            yield
        finally:
            _take_cookie(previous)


def _has_pid(pid: object) -> bool:
    """A spawn made a child (a mocked ``_execute_child`` leaves ``Popen.pid`` None)."""
    return isinstance(pid, int) and not isinstance(pid, bool) and pid > 0


@contextlib.contextmanager
def suspended() -> Iterator[None]:
    """Spawns inside this block (this thread) are not captured: our own helpers."""
    depth = getattr(_local, "suspended", 0)
    _local.suspended = depth + 1
    try:
        yield
    finally:
        _local.suspended = depth


def _caller() -> str:
    """The module of the nearest caller outside the standard library and this module (a
    frame walk, a few frames deep: microseconds; called from ``Capture.active``)."""
    frame: Any = sys._getframe(2)
    stdlib = sys.stdlib_module_names
    while frame is not None:
        module = frame.f_globals.get("__name__") or ""
        if module != __name__ and module.partition(".")[0] not in stdlib:
            return str(module)
        frame = frame.f_back
    return ""


#: Owner tags that tie work to one cell run (a library helper's owner keeps only the others).
_CELL_TAGS = ("cell_id", "run", "parent", "client_session")


class Capture:
    """The installed wrappers; ``enabled`` switches capture without unpatching. What a
    captured spawn is, is up to a subclass (``begin``, ``spawned``, ``failed``): here, only
    a cookie. Everything on a spawn's own path is kept to a few calls: it runs for every
    process every library starts, its caches cold after each ``fork``."""

    def __init__(self, machinery: tuple[str, ...] = OWN_MACHINERY) -> None:
        #: Modules whose spawns are the host's own (a kernel's, a Dask worker's), never work.
        self.machinery = machinery
        self.enabled = True
        self._saved: list[tuple[Any, str, Any]] = []

    def active(self) -> bool:
        """Whether a spawn now is captured: capture on, not ``suspended``, and the nearest
        caller outside the standard library not the host's own machinery (kept for ``begin``)."""
        if not self.enabled or _local.__dict__.get("suspended"):
            return False
        _local.caller = caller = _caller()
        return not caller.startswith(self.machinery)

    # -- what a captured spawn is --------------------------------------------------------
    def begin(self, argv: Any, popen: subprocess.Popen[Any] | None = None) -> tuple[str, Any, bool]:
        """Before the child exists (``popen``: the ``Popen`` being made, if that is the
        route): its operation id (its cookie), a token for ``spawned`` or ``failed``, and
        whether it is ``detach`` work (a ``Popen`` then gets a session of its own, as
        ``jc.start`` work has, so the kernel's process group dying does not take it)."""
        return new_id(), None, False

    def spawned(self, token: Any, pid: int, argv: Any, popen: subprocess.Popen[Any] | None) -> None:
        """Its child exists (``pid``)."""

    def failed(self, token: Any) -> None:
        """The spawn started nothing (it raised, or a mock made no child)."""

    # -- install -----------------------------------------------------------------------
    def install(self) -> None:
        self._patch(subprocess.Popen, "__init__", self._popen_init(subprocess.Popen.__init__))
        self._patch(os, "system", self._system(os.system))
        for name in ("posix_spawn", "posix_spawnp"):
            if hasattr(os, name):
                self._patch(os, name, self._posix_spawn(getattr(os, name)))
        for name in ("fork", "forkpty"):
            if hasattr(os, name):
                self._patch(os, name, self._fork(getattr(os, name)))
        self._patch(multiprocessing.util, "spawnv_passfds", self._spawnv(multiprocessing.util.spawnv_passfds))

    def uninstall(self) -> None:
        while self._saved:
            owner, name, original = self._saved.pop()
            setattr(owner, name, original)

    def _patch(self, owner: Any, name: str, replacement: Any) -> None:
        self._saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, replacement)

    def _begin(self, argv: Any, popen: subprocess.Popen[Any] | None = None) -> tuple[str, Any, bool]:
        try:
            return self.begin(argv, popen)
        except Exception:  # capture must never break the user's spawn: a cookie, at least
            log.exception("preparing a capture failed")
            return new_id(), None, False

    def _report(self, pid: int, token: Any, argv: Any, popen: subprocess.Popen[Any] | None) -> None:
        if not _has_pid(pid):  # nothing was started (a mock): nothing to own, ever
            self._fail(token)
            return
        try:
            self.spawned(token, pid, argv, popen)
        except Exception:  # capture must never break the user's spawn
            log.exception("capturing pid %d failed", pid)

    def _fail(self, token: Any) -> None:
        try:
            self.failed(token)
        except Exception:  # capture must never break the user's spawn, nor change its error
            log.exception("recording a failed spawn failed")

    @contextlib.contextmanager
    def _spawning(self, argv: Any) -> Iterator[tuple[str, Any]]:
        """A captured spawn's (operation id, token); ``failed`` if the spawn raises."""
        op_id, token, _ = self._begin(argv)
        try:
            yield op_id, token
        except BaseException:
            self._fail(token)
            raise

    # -- the routes ------------------------------------------------------------------------
    def _popen_init(self, original: Callable[..., None]) -> Callable[..., None]:
        capture = self

        def __init__(popen: subprocess.Popen[Any], args: Any, *more: Any, **kwargs: Any) -> None:
            inherits = len(more) < 10 and kwargs.get("env") is None
            if len(more) >= 10 or not capture.active():  # (env passed positionally: left be)
                if inherits:
                    with _ENV_LOCK:  # not while a captured spawn has its cookie in the environment
                        original(popen, args, *more, **kwargs)
                else:
                    original(popen, args, *more, **kwargs)
                return
            op_id, token, detached = capture._begin(args, popen)
            if detached and len(more) < 12:
                kwargs.setdefault("start_new_session", True)
            try:
                if inherits:
                    with _ENV_LOCK:  # (the cookie inline: this path runs for every spawn)
                        previous = _put_cookie(op_id)
                        try:
                            original(popen, args, *more, **kwargs)
                        finally:
                            _take_cookie(previous)
                else:
                    kwargs["env"] = {**kwargs["env"], COOKIE: op_id}
                    original(popen, args, *more, **kwargs)
            except BaseException:
                # Interrupted after its child started (a stop landing inside Popen, which
                # then leaves the child running): still ours to own, and to end. (A child
                # whose exec failed was reaped by Popen already: a failed spawn.)
                if getattr(popen, "_child_created", False) and getattr(popen, "returncode", None) is None:
                    capture._report(popen.pid, token, args, popen)
                else:
                    capture._fail(token)
                raise
            capture._report(popen.pid, token, args, popen)

        return __init__

    def _system(self, original: Callable[[str], int]) -> Callable[[str], int]:
        capture = self

        def system(command: str) -> int:
            """``os.system`` through ``Popen`` when captured (so its child is known): the same
            wait status."""
            if not capture.active():
                with _ENV_LOCK:
                    return original(command)
            proc = subprocess.Popen(command, shell=True)
            returncode = proc.wait()
            return returncode << 8 if returncode >= 0 else -returncode

        return system

    def _posix_spawn(self, original: Callable[..., int]) -> Callable[..., int]:
        capture = self

        def spawn(path: Any, argv: Sequence[Any], env: Mapping[Any, Any], *args: Any, **kwargs: Any) -> int:
            if not capture.active():
                return original(path, argv, env, *args, **kwargs)
            with capture._spawning(list(argv)) as (op_id, token):
                pid = original(path, argv, {**env, COOKIE: op_id}, *args, **kwargs)
            capture._report(pid, token, list(argv), None)
            return pid

        return spawn

    def _fork(self, original: Callable[[], Any]) -> Callable[[], Any]:
        capture = self

        def fork() -> Any:
            if not capture.active():
                with _ENV_LOCK:
                    return original()
            with capture._spawning([sys.executable, "(fork)"]) as (op_id, token), _ENV_LOCK:
                result = original()
            pid = result[0] if isinstance(result, tuple) else result
            if pid == 0:
                os.environ[COOKIE] = op_id  # what this child execs or spawns carries it
                capture.enabled = False  # the child's own children belong to this tree
            else:
                capture._report(pid, token, [sys.executable, "(fork)"], None)
            return result

        return fork

    def _spawnv(self, original: Callable[..., int]) -> Callable[..., int]:
        capture = self

        def spawnv_passfds(path: Any, args: Sequence[Any], passfds: Any) -> int:
            if not capture.active():
                with _ENV_LOCK:
                    return original(path, args, passfds)
            with capture._spawning(list(args)) as (op_id, token):
                with _cookie_in_environ(op_id):  # fork_exec passes on the environment of the moment
                    pid = original(path, args, passfds)
            capture._report(pid, token, list(args), None)
            return pid

        return spawnv_passfds


class OwnedCapture(Capture):
    """A ``Capture`` whose spawns become ``process`` operations of ``registry``: owned by
    ``owner()`` (a kernel's cell, a Dask task) with ``policy()``, expected before the child
    exists (a trigger between the spawn and the adoption still reaches it) and made operations
    in a batch after (``core.starts.expect_spawn``)."""

    def __init__(
        self,
        registry: Registry,
        owner: Callable[[], Mapping[str, Any]],
        policy: Callable[[], Policy],
        machinery: tuple[str, ...] = OWN_MACHINERY,
    ) -> None:
        super().__init__(machinery)
        self.registry = registry
        self.owner = owner
        self.policy = policy

    def begin(self, argv: Any, popen: subprocess.Popen[Any] | None = None) -> tuple[str, Expected, bool]:
        policy = self.policy()
        owner = self.owner()
        if policy is Policy.CANCEL and getattr(_local, "caller", "").startswith(HELPER_LIBRARIES):
            policy = Policy.KERNEL  # a library's session helper: the kernel's, not this cell's
            owner = {k: v for k, v in owner.items() if k not in _CELL_TAGS}
        if isinstance(argv, list):
            argv = tuple(argv)  # (named later: as it was at the spawn)
        detached = policy is Policy.DETACH
        op_id = new_id(detached=detached)
        expected = expect_spawn(self.registry, op_id, argv, policy=policy, owner=owner)
        if popen is not None:  # (its pid is known from its fork on: see ``Adoptions._left``)
            expected.popen = weakref.ref(popen)
        return op_id, expected, detached

    def failed(self, expected: Expected | None) -> None:
        if expected is None:
            return
        op = self.registry.adoptions.withdraw(expected)
        if op is None:
            op = self.registry.adoptions.operation_of(expected)  # listed as failed, as a spawn that raised is
        self.registry.finish(op, State.FAILED)

    def spawned(
        self, expected: Expected | None, pid: int, argv: Any, popen: subprocess.Popen[Any] | None
    ) -> None:
        try:
            if expected is None:  # (its preparation failed: named and owned now)
                adopt_process(self.registry, pid, popen=popen, name=str(argv), owner=self.owner(), defer=True)
                return
            if is_protected(pid):  # never ours to end (``adopt_process`` records the failure)
                op = self.registry.adoptions.withdraw(expected) or self.registry.adoptions.operation_of(
                    expected
                )
                adopt_process(self.registry, pid, op=op)
            made = self.registry.adoptions.spawned(expected, pid, popen)
            if made is not None:
                adopt_process(self.registry, pid, op=made, popen=popen, defer=True)
        except KeyError:
            pass  # it exited before we looked: nothing to own
