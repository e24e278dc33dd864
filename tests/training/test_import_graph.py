"""The training package's modules import each other without a circle. A lazy import (inside a function)
counts as much as one at the top: it still ties the two modules together, and a circle of them breaks
as soon as either import moves or runs first. The graph is read from the source (ast), so it sees
every import statement, run or not."""

from __future__ import annotations

import ast
from pathlib import Path

import taskrouter

PACKAGE_ROOT = Path(taskrouter.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that `path` imports anywhere in its body (from-imports of a name that is
    itself a module count as that module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found & known


def import_graph(package: str) -> dict[str, set[str]]:
    folder = PACKAGE_ROOT.parent.joinpath(*package.split("."))
    paths = {_module_name(path): path for path in folder.rglob("*.py")}
    known = set(paths)
    return {name: imports_of(path, known) - {name} for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph as the modules along it (the first repeated at the end), or None."""
    state: dict[str, str] = {}  # "open" while on the path, "done" once every path from it is explored
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_sees_a_lazy_import_circle(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef later():\n    from taskrouter.training.launch import main\n")
    assert imports_of(module, {"taskrouter.training.launch", "taskrouter.training.cli"}) == {"taskrouter.training.launch"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_training_commands_share_their_options_without_importing_each_other():
    graph = import_graph("taskrouter.training")
    assert {"taskrouter.training.cli", "taskrouter.training.launch"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])
    # one definition of the shared options, imported by both commands
    assert "taskrouter.training.options" in graph["taskrouter.training.cli"]
    assert "taskrouter.training.options" in graph["taskrouter.training.launch"]
    assert "taskrouter.training.cli" not in graph["taskrouter.training.launch"]
