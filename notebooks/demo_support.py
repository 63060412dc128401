"""Helpers for the demo notebooks: a generated C project, sample texts. Nothing external."""

from __future__ import annotations

import os
from pathlib import Path

QUICK = bool(os.environ.get("JUPYTER_CANCEL_DEMO_QUICK"))


def make_c_project(where: str | os.PathLike[str] = "build-demo", files: int | None = None, size: int | None = None) -> Path:
    """Write a C project whose `make -j` takes a while (each file is a big unrolled function)."""
    files = files or (8 if QUICK else 48)
    size = size or (200 if QUICK else 3000)
    root = Path(where)
    (root / "src").mkdir(parents=True, exist_ok=True)
    objs = []
    for i in range(files):
        body = "\n".join(f"    x = x * {j % 7 + 3} + {j} ^ (x >> {j % 5 + 1});" for j in range(size))
        (root / "src" / f"unit{i}.c").write_text(
            f"unsigned long unit{i}(unsigned long x) {{\n{body}\n    return x;\n}}\n"
        )
        objs.append(f"build/unit{i}.o")
    calls = " + ".join(f"unit{i}(1)" for i in range(files))
    decls = "\n".join(f"unsigned long unit{i}(unsigned long);" for i in range(files))
    (root / "src" / "main.c").write_text(
        f'#include <stdio.h>\n{decls}\nint main(void) {{ printf("%lu\\n", {calls}); return 0; }}\n'
    )
    n = len(objs) + 1
    rules = "\n".join(
        f"build/unit{i}.o: src/unit{i}.c | build\n\t@echo \"[{i + 1}/{n}] CC unit{i}.c\"\n\t@$(CC) -O2 -c $< -o $@"
        for i in range(files)
    )
    (root / "Makefile").write_text(
        f"CC ?= cc\nall: app\nbuild:\n\tmkdir -p build\n{rules}\n"
        f"app: {' '.join(objs)} src/main.c\n\t@echo \"[{n}/{n}] LINK app\"\n\t@$(CC) -O2 $^ -o $@\n"
        "clean:\n\trm -rf build app\n.PHONY: all clean\n"
    )
    return root


TOPICS = ["cancellation", "notebooks", "process trees", "language models", "builds", "GPUs", "browsers", "kernels"]


def sample_texts(n: int | None = None) -> list[str]:
    n = n or (24 if QUICK else 400)
    return [f"Note {i}: a short text about {TOPICS[i % len(TOPICS)]} and why work should stop when asked." for i in range(n)]
