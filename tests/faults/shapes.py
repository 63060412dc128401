"""Tree shapes of the fault suite: how each is started in a kernel and how many members it announces."""

from __future__ import annotations

#: name → (tree.py mode, members announced, extra jc.start arguments)
SHAPES: dict[str, tuple[str, int, str]] = {
    "plain": ("child", 1, ""),
    "setsid": ("three", 3, ""),
    "daemon": ("daemon", 2, ""),
    "sigterm_ignorer": ("ignore_term", 1, ", grace=0.2"),
    "env_clearing_daemon": ("envclear", 2, ""),
    "chain50": ("chain50", 50, ""),
    "wide200": ("wide200", 200, ""),
    "forks_while_dying": ("fork_on_term", 1, ", grace=0.5"),
}
