"""The package's shape, checked: no import circle in the core, no module reaching into
another module's private parts, no module outside the core touching the core's internals."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "jupyter_cancel"


def _modules(folder: Path) -> dict[str, ast.Module]:
    return {
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts): ast.parse(p.read_text(), str(p))
        for p in sorted(folder.rglob("*.py"))
    }


def _import_time_edges(name: str, tree: ast.Module) -> set[str]:
    """Modules of the package that ``name`` imports, at the top, inside a function (a lazy
    import is still an import) or under ``if TYPE_CHECKING:`` (a circle of types is a circle
    of knowledge: the operation must not need the registry to be understood)."""
    package = name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")
            base = base[: len(base) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            out.add(target)
            if not node.module:
                out.update(f"{target}.{a.name}" for a in node.names)
    return out


def test_no_import_circle_in_the_core():
    mods = {k.removesuffix(".__init__"): v for k, v in _modules(PACKAGE / "core").items()}
    graph = {name: {e for e in _import_time_edges(name, tree) if e in mods} for name, tree in mods.items()}
    graph = {k: v - {k} for k, v in graph.items()}
    package = "jupyter_cancel.core"
    graph.pop(package, None)  # the package re-exports; its modules never import it
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if nxt == package:
                raise AssertionError(f"{node} imports the core package itself")
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " → ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [])


def _private_names(tree: ast.Module) -> set[str]:
    """Underscore names a module defines: functions, classes, attributes it assigns."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)  # __slots__ entries
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_no_module_reaches_into_another_modules_private_parts():
    mods = _modules(PACKAGE)
    ours = set().union(*(_private_names(t) for t in mods.values()))
    bad = []
    for name, tree in mods.items():
        own = _private_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                bad += [
                    f"{name} imports {a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
            if (
                not isinstance(node, ast.Attribute)
                or not node.attr.startswith("_")
                or node.attr.startswith("__")
            ):
                continue
            value = node.value
            if isinstance(value, ast.Name) and value.id in ("self", "cls"):
                continue
            if isinstance(value, ast.Call) and ast.unparse(value.func) == "super":
                continue  # an overridden hook of a base class (jupyter_server's ExtensionApp)
            if node.attr in ours and node.attr not in own:
                bad.append(f"{name}:{node.lineno} {ast.unparse(node)}")
    assert bad == []


def test_reasons_read_the_same_in_the_kernel_and_in_the_browser():
    """A cell's one-line stop and the labextension's widget and panel use one table of words."""
    import re
    from pathlib import Path

    from jupyter_cancel.core.model import REASON_WORDS

    tokens = (Path(__file__).resolve().parents[1] / "labextension" / "src" / "types.ts").read_text()
    table = tokens[tokens.index("function describeReason") :]
    table = table[: table.index("};")]
    words = dict(re.findall(r"(\w+): '([^']*)'", table))
    assert words == REASON_WORDS


def test_the_wire_is_one_module_both_sides_import():
    """Kernel and server speak through ``protocol.py``: no server module imports the kernel's
    control handler for a message name."""
    server = _modules(PACKAGE / "server")
    for name, tree in server.items():
        assert "jupyter_cancel.kernel.control" not in _import_time_edges(name, tree), name
    control = _modules(PACKAGE / "kernel")["jupyter_cancel.kernel.control"]
    assert "jupyter_cancel.protocol" in _import_time_edges("jupyter_cancel.kernel.control", control)


def test_the_architecture_map_names_only_what_exists():
    """docs/DEVELOPMENT.md's map: every module and folder it names exists, and every module of
    the package is named in it (a new one is placed on the map, a removed one leaves it)."""
    import re

    text = (PACKAGE.parent / "docs" / "DEVELOPMENT.md").read_text()
    block = text.split("## Architecture map", 1)[1].split("```")[1]
    folders = re.findall(r"^(\S+/)\s", block, re.M)
    assert folders and all((PACKAGE.parent / f).is_dir() for f in folders), folders
    named = set(re.findall(r"\b([a-z_]+\.py)\b", block))
    for f in [f for f in named if not (PACKAGE.parent / f).exists()]:
        assert list(PACKAGE.parent.glob(f"jupyter_cancel/**/{f}")) or list(PACKAGE.parent.glob(f"*/{f}")), f
    core = {p.name for p in (PACKAGE / "core").glob("*.py")} - {"__init__.py"}
    assert not core - named, f"core modules missing from the map: {sorted(core - named)}"
    sources = {p.name for p in (PACKAGE.parent / "labextension" / "src").glob("*.ts")}
    assert set(re.findall(r"\b([a-z]+\.ts)\b", block)) == sources, sorted(sources)


def test_platform_mechanisms_are_asked_of_one_backend():
    """pidfds, our /proc reads and cgroups are chosen once, in ``core/platform.py``; every other
    module asks ``platform.current()`` — no module-level flag, no probe of its own."""
    probes = ('hasattr(os, "pidfd_open")', 'hasattr(signal, "pidfd_send_signal")', 'os.path.isdir("/proc")')
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "platform.py":
            continue
        text = path.read_text()
        for flag in ("HAVE_PIDFD", "HAVE_PROC", "USE_COOKIE_SWEEP"):
            assert flag not in text, f"{path.name} has {flag}"
        for probe in probes:
            assert probe not in text, f"{path.name} probes the platform itself: {probe}"


#: Classes allowed above the size every other one keeps, with the size they may not grow past
#: (none now: the registry and the server's tracker were split; keep it that way).
LARGE_CLASSES: dict[str, int] = {}


def test_the_registry_names_no_concrete_runner_when_it_decides():
    """The registry originates and records; what a runner is decides only in the supervisor
    (tree plumbing) or the runner itself: no ``isinstance`` on a runner class in the registry."""
    import jupyter_cancel.core.runners as runners

    concrete = {
        name for name, value in vars(runners).items() if isinstance(value, type) and name.endswith("Runner")
    }
    tree = ast.parse((PACKAGE / "core" / "registry.py").read_text())
    checks = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and ast.unparse(node.func) == "isinstance"
        and {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)} & concrete
    ]
    assert concrete >= {"TreeRunner", "ProcessRunner", "CapturedRunner", "TaskRunner"}
    assert not checks, f"the registry decides by a concrete runner: {checks}"


#: What an operation's end is made of: only a registry writes it (the server's own, for the
#: trees it ends itself), never a server module into a dict.
END_FIELDS = {"exit_code", "ended", "cancel_latency", "unkillable", "duration"}
ENDED_STATES = {"completed", "failed", "cancelled"}


def _writes_an_end(key: str | None, value: ast.expr) -> bool:
    if any(isinstance(n, ast.Constant) and n.value == key for n in ast.walk(value)):
        return False  # a copy of what a registry said (``data.get("duration")``), not a write
    if key in END_FIELDS:
        return True
    return key == "state" and not (isinstance(value, ast.Constant) and value.value not in ENDED_STATES)


def test_the_server_writes_no_operations_end_into_a_dict():
    """The trees the server ends itself are operations of a registry of its own
    (``server/owned.py``): their states, exit codes and latency come from the same code as a
    kernel's. A server module may report a live operation (``state="running"``), not an end."""
    found = []
    for path in sorted((PACKAGE / "server").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            pairs: list[tuple[str | None, ast.expr]] = []
            if isinstance(node, ast.Dict):
                pairs = [
                    (k.value if isinstance(k, ast.Constant) else None, v)
                    for k, v in zip(node.keys, node.values, strict=True)
                ]
            elif isinstance(node, ast.Call):
                pairs = [(kw.arg, kw.value) for kw in node.keywords]
            elif isinstance(node, ast.Assign):
                pairs = [
                    (t.slice.value, node.value)
                    for t in node.targets
                    if isinstance(t, ast.Subscript) and isinstance(t.slice, ast.Constant)
                ]
            found += [
                f"{path.name}:{node.lineno} {key}" for key, value in pairs if _writes_an_end(key, value)
            ]
    assert not found, f"server modules writing an operation's end: {found}"


def test_dask_internals_are_touched_only_by_its_adapter():
    """``client._cancel``, its ``_stream_handlers``, a worker's ``state.tasks`` and
    ``state.stimulus_log``: what a distributed release may change, read in one module."""
    internals = {"_cancel", "_stream_handlers", "stimulus_log"}
    found = []
    for path in sorted((PACKAGE / "dask").glob("*.py")):
        if path.name == "adapter.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and (
                node.attr in internals
                or (
                    node.attr == "tasks"
                    and isinstance(node.value, ast.Attribute)
                    and node.value.attr == "state"
                )
            ):
                found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    assert not found, f"distributed internals outside dask/adapter.py: {found}"


def test_functions_are_short_and_classes_small():
    long_functions, large_classes = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1 if hasattr(node, "lineno") else 0
            where = f"{path.relative_to(PACKAGE)}:{getattr(node, 'name', '')}"
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and lines > 50:
                long_functions.append(f"{where} ({lines} lines)")
            if isinstance(node, ast.ClassDef) and lines > LARGE_CLASSES.get(where, 350):
                large_classes.append(f"{where} ({lines} lines)")
    assert not long_functions, f"functions over 50 lines: {long_functions}"
    assert not large_classes, f"classes over 350 lines (or past their limit): {large_classes}"


def test_every_benchmark_keeps_jupyter_out_of_the_users_home():
    """A bench starts kernels and servers: run as a script, it first points Jupyter's and
    IPython's folders into a temporary one (``private_jupyter_home``), as the tests do."""
    bench = PACKAGE.parent / "bench"
    scripts = [p for p in sorted(bench.glob("*.py")) if '__name__ == "__main__"' in p.read_text()]
    assert scripts, "no benchmark scripts found"
    missing = [p.name for p in scripts if "private_jupyter_home(" not in p.read_text()]
    assert not missing, f"benchmarks that would write to the user's home: {missing}"
