"""An optional cgroup v2 per operation: catches every escape, killed atomically.

Used only where a writable cgroup v2 hierarchy with ``cgroup.kill`` exists (Linux 5.14+,
not in most containers, never on macOS). Everything works without it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from functools import lru_cache

from .platform import current

log = logging.getLogger(__name__)

_CANDIDATES = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")
_ENV_DISABLE = "JUPYTER_CANCEL_NO_CGROUP"
# The wrapper joins the cgroup, then becomes the real command: nothing runs outside it.
_JOIN = 'echo $$ > "$0" 2>/dev/null; exec "$@"'


@lru_cache(maxsize=1)
def _base() -> str | None:
    if os.environ.get(_ENV_DISABLE) or not os.path.isdir("/sys/fs/cgroup"):
        return None
    for mount in _CANDIDATES:
        if not os.path.exists(os.path.join(mount, "cgroup.procs")):
            continue
        if not os.path.exists(os.path.join(mount, "cgroup.max.descendants")):
            continue  # a v1 hierarchy
        base = os.path.join(mount, f"jupyter_cancel-{os.getuid()}")
        try:
            os.makedirs(base, exist_ok=True)
            probe = os.path.join(base, f"probe-{os.getpid()}")
            os.mkdir(probe)
            has_kill = os.path.exists(os.path.join(probe, "cgroup.kill"))
            os.rmdir(probe)
        except OSError:
            continue
        if has_kill:
            return base
    return None


class Cgroup:
    """One operation's cgroup: ``wrap`` a command into it, list ``pids``, ``kill`` all."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._procs = os.path.join(path, "cgroup.procs")

    @staticmethod
    def available() -> bool:
        return _base() is not None

    @classmethod
    def create(cls, op_id: str) -> Cgroup | None:
        if not current().cgroups:
            return None
        base = _base()
        if base is None:
            return None
        path = os.path.join(base, op_id)
        try:
            os.mkdir(path)
        except OSError as err:
            log.debug("no cgroup for %s: %s", op_id, err)
            return None
        return cls(path)

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return ["/bin/sh", "-c", _JOIN, os.path.join(self.path, "cgroup.procs"), *argv]

    def add(self, pid: int) -> bool:
        """Move a running process into this cgroup (its children forked before stay where
        they are: the cookie finds those)."""
        try:
            with open(os.path.join(self.path, "cgroup.procs"), "w") as fh:
                fh.write(str(pid))
            return True
        except OSError as err:
            log.debug("cannot move %d into %s: %s", pid, self.path, err)
            return False

    def add_tree(self, pid: int, depth: int = 4) -> bool:
        """Move ``pid`` in, then whatever it forked before the move (its children as
        ``/proc/<pid>/task/*/children`` lists them, a few levels deep): a shell's ``job &``
        can fork before we get to move the shell."""
        if not self.add(pid):
            return False
        if depth > 0:
            for child in children_of(pid):
                self.add_tree(child, depth - 1)
        return True

    def pids(self) -> list[int]:
        """Its live processes (zombies are not listed): one read on the termination's path,
        so a raw ``os.read``, not a text file object."""
        try:
            fd = os.open(self._procs, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return []
        try:
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
        except OSError:
            return []
        finally:
            os.close(fd)
        return [int(pid) for pid in b"".join(chunks).split()]

    def kill(self) -> None:
        try:
            with open(os.path.join(self.path, "cgroup.kill"), "w") as fh:
                fh.write("1")
        except OSError as err:
            log.debug("cgroup.kill failed for %s: %s", self.path, err)

    def remove(self) -> bool:
        """Remove the cgroup once empty; False while processes remain in it."""
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True


def remove_stale(prefix: str, older_than: float) -> int:
    """Remove this user's empty cgroups named ``prefix*`` created more than ``older_than``
    seconds ago (left by a server that was killed); a cgroup with processes stays. Returns
    how many went."""
    base = _base()
    if base is None:
        return 0
    removed = 0
    now = time.time()
    try:
        names = [n for n in os.listdir(base) if n.startswith(prefix)]
    except OSError:
        return 0
    for name in names:
        path = os.path.join(base, name)
        try:
            if now - os.stat(path).st_ctime > older_than and Cgroup(path).remove():
                removed += 1
        except OSError:
            continue
    return removed


def children_of(pid: int) -> list[int]:
    """The children of ``pid`` as the kernel lists them (``/proc/<pid>/task/*/children``):
    one small read per thread; empty if it is gone or the kernel has no such file."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out.extend(int(c) for c in fh.read().split())
        except (OSError, ValueError):
            continue
    return out
