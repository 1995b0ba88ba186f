"""No import circles among `orchestrator` modules, and Typer only in the command layer.

The graph is read with ast, not by importing: an edge A -> B is any import of B in A, at module
level or inside a function (a lazy import is still a dependency), outside `if TYPE_CHECKING:`. `from pkg import name` depends on `pkg` itself unless every name is a
submodule, which is then the dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "orchestrator"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_time_statements(body: list[ast.stmt]):
    """Every statement, function bodies included, but not type-only imports."""
    for node in body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from import_time_statements(node.orelse)
            continue
        yield node
        for block in ("body", "orelse", "finalbody", "handlers"):
            inner = getattr(node, block, None)
            if isinstance(inner, list):
                yield from import_time_statements(inner)


def imports_of(path: Path, name: str, modules: set[str]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in import_time_statements(ast.parse(path.read_text()).body):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            submodules = {f"{source}.{alias.name}" for alias in node.names}
            found |= submodules & modules
            if not submodules <= modules and source in modules:
                found.add(source)  # a name defined in the module (or package) itself
    found.discard(name)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    paths = {module_name(p, root): p for p in (root / "orchestrator").rglob("*.py")}
    return {name: imports_of(path, name, set(paths)) for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None when the graph is acyclic."""
    state: dict[str, str] = {}  # "open" while on the path, "done" after
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_orchestrator_modules_import_without_a_circle():
    graph = import_graph(REPO)
    assert "orchestrator.capacity" in graph and graph["orchestrator.launch"]  # the graph is real
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_cycle_finder_sees_a_circle_written_on_purpose(tmp_path):
    (tmp_path / "orchestrator").mkdir()
    (tmp_path / "orchestrator" / "__init__.py").write_text("")
    (tmp_path / "orchestrator" / "a.py").write_text("from orchestrator.b import thing\n")
    (tmp_path / "orchestrator" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import c\nfrom . import a\n"
    )
    (tmp_path / "orchestrator" / "c.py").write_text(
        "import orchestrator.a\n\ndef later():\n    from orchestrator import b\n"
    )
    graph = import_graph(tmp_path)
    assert graph["orchestrator.b"] == {"orchestrator.a"}  # type-only import left out
    # A function-level import is a dependency too.
    assert graph["orchestrator.c"] == {"orchestrator.a", "orchestrator.b"}
    assert find_cycle(graph) == ["orchestrator.a", "orchestrator.b", "orchestrator.a"]


def test_typer_is_imported_only_by_the_command_layer():
    users = sorted(
        module_name(path, REPO)
        for path in PACKAGE.rglob("*.py")
        if any(
            isinstance(node, ast.Import | ast.ImportFrom)
            and any(
                (alias.name if isinstance(node, ast.Import) else node.module or "").startswith(
                    "typer"
                )
                for alias in node.names
            )
            for node in ast.walk(ast.parse(path.read_text()))
        )
    )
    assert users and all(name.startswith("orchestrator.commands") for name in users), users
