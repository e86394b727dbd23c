"""The package's architecture, checked on its source with `ast` (nothing of the package is imported here).

- Layers: each package imports only itself and the packages to its left in configs -> model -> timing ->
  scaling -> experiments (every import counts, at module level, inside functions or under TYPE_CHECKING: a
  lazy import is still a dependency).
- No import cycle among the package's modules (imports that run when a module is imported: everywhere but
  inside functions and `if TYPE_CHECKING:` blocks).
- No name starting with `_` imported from another module of the package (private means private).
- No function or method longer than `MAX_FUNCTION_LINES` lines (the `def` line to the last line of its body).
- `experiments/cli.py` imports only at module level.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOP = "smallest_loss"
LAYERS = ("configs", "model", "timing", "scaling", "experiments")  # each may import only those to its left
MAX_FUNCTION_LINES = 60
LENGTH_EXEMPT = ("experiments/scripts/",)  # one-off scripts, not the library


@dataclass(frozen=True)
class Import:
    target: str  # the module imported from (absolute dotted name)
    names: tuple[str, ...]  # names imported from it (empty for `import x.y`)
    line: int
    at_import_time: bool  # runs when the module is imported: not inside a function or `if TYPE_CHECKING:`
    in_function: bool


def module_files() -> dict[str, Path]:
    """Every module of the package, by dotted name (`smallest_loss.scaling.fit`), from the source folders."""
    modules = {}
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((TOP, *parts))] = path
    return modules


MODULES = module_files()


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a `from ... import` names (relative imports resolved against `module`'s package)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path) -> list[Import]:
    """Every import statement of a module, with whether it runs at import time and whether it is in a function."""
    found: list[Import] = []

    def visit(node: ast.AST, at_import_time: bool, in_function: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(alias.name, (), node.lineno, at_import_time, in_function))
        elif isinstance(node, ast.ImportFrom):
            names = tuple(alias.name for alias in node.names)
            found.append(Import(_absolute(module, path, node), names, node.lineno, at_import_time, in_function))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            at_import_time, in_function = False, True
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, False, in_function)
            for child in node.orelse:
                visit(child, at_import_time, in_function)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, at_import_time, in_function)

    visit(ast.parse(path.read_text(), filename=str(path)), True, False)
    return found


@functools.cache
def all_imports() -> dict[str, list[Import]]:
    """Every module's imports, parsed once, when a test first asks (not at collection, which every worker does)."""
    return {module: imports_of(module, path) for module, path in MODULES.items()}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == TOP and parts[1] in LAYERS else None


def _targets(imp: Import) -> list[str]:
    """The package modules an import loads: `from pkg import mod` loads the submodule `pkg.mod` when there is one."""
    if imp.target not in MODULES:
        return []
    subs = [f"{imp.target}.{name}" for name in imp.names if f"{imp.target}.{name}" in MODULES]
    return subs if subs and len(subs) == len(imp.names) else [imp.target, *subs]


def test_the_source_folders_are_found():
    assert {_layer(m) for m in MODULES} == set(LAYERS)
    assert f"{TOP}.experiments.cli" in MODULES and f"{TOP}.configs.schema" in MODULES


def test_the_checks_see_what_they_check(tmp_path):
    """The checks on a made-up module: imports in functions and under TYPE_CHECKING, relative imports, cycles."""
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from smallest_loss.scaling import laws as F\n"
        "from .laws import _private\n"
        "if TYPE_CHECKING:\n"
        "    from smallest_loss.experiments.cli import main\n"
        "def f():\n"
        "    import smallest_loss.model.train\n"
    )
    found = imports_of(f"{TOP}.scaling.mod", source)
    assert [(i.target, i.names, i.at_import_time, i.in_function) for i in found] == [
        ("typing", ("TYPE_CHECKING",), True, False),
        (f"{TOP}.scaling", ("laws",), True, False),
        (f"{TOP}.scaling.laws", ("_private",), True, False),
        (f"{TOP}.experiments.cli", ("main",), False, False),
        (f"{TOP}.model.train", (), False, True),
    ]
    assert _targets(found[1]) == [f"{TOP}.scaling.laws"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}) == [["a", "b", "c"], ["e"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_each_package_imports_only_packages_to_its_left():
    wrong = []
    for module, imports in all_imports().items():
        rank = LAYERS.index(_layer(module))
        for imp in imports:
            target = _layer(imp.target)
            if target is not None and LAYERS.index(target) > rank:
                wrong.append(f"{_rel(MODULES[module])}:{imp.line} imports {imp.target} ({_layer(module)} -> {target})")
    assert not wrong, f"imports against the layers {' -> '.join(LAYERS)}:\n" + "\n".join(wrong)


def test_no_layer_below_experiments_imports_experiments():
    wrong = [
        f"{_rel(MODULES[module])}:{imp.line} imports {imp.target}"
        for module, imports in all_imports().items()
        if _layer(module) != "experiments"
        for imp in imports
        if _layer(imp.target) == "experiments" or imp.target == f"{TOP}.experiments"
    ]
    assert not wrong, "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (or a module importing itself), Tarjan."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_no_import_cycle_among_modules():
    graph = {
        m: {t for imp in imports if imp.at_import_time for t in _targets(imp)} for m, imports in all_imports().items()
    }
    cycles = _cycles(graph)
    lines = []
    for component in cycles:
        members = set(component)
        edges = [
            f"  {_rel(MODULES[m])}:{imp.line} imports {t}"
            for m in component
            for imp in all_imports()[m]
            if imp.at_import_time
            for t in _targets(imp)
            if t in members
        ]
        lines.append(f"cycle among {', '.join(component)}:\n" + "\n".join(edges))
    assert not cycles, "\n".join(lines)


def test_no_private_name_imported_from_another_module():
    wrong = []
    for module, imports in all_imports().items():
        for imp in imports:
            if not imp.target.startswith(f"{TOP}.") and imp.target != TOP:
                continue
            private = [n for n in imp.names if n.startswith("_")] + [
                p for p in imp.target.split(".") if p.startswith("_")
            ]
            if private and imp.target != module:
                wrong.append(f"{_rel(MODULES[module])}:{imp.line} imports {', '.join(private)} from {imp.target}")
    assert not wrong, "private names imported across modules:\n" + "\n".join(wrong)


def test_no_function_longer_than_the_limit():
    long = []
    for path in MODULES.values():
        rel = _rel(path)
        if rel.startswith(LENGTH_EXEMPT):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{rel}:{node.lineno} {node.name}: {lines} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(sorted(long))


def test_cli_imports_only_at_module_level():
    cli = f"{TOP}.experiments.cli"
    inside = [f"{_rel(MODULES[cli])}:{imp.line} imports {imp.target}" for imp in all_imports()[cli] if imp.in_function]
    assert not inside, "imports inside functions of the CLI:\n" + "\n".join(inside)
