"""The package's layers stay one-way: no import cycle inside a package (lazy, function-level imports included,
since those are how cycles hide), and the evaluation report reads results without importing the runs."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "livedenoise"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every livedenoise module -> the livedenoise modules it imports anywhere in its text, except under
    ``if TYPE_CHECKING:`` (annotations only, never executed)."""
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        typing_only = {id(sub) for node in ast.walk(tree)
                       if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                       for sub in ast.walk(node)}
        deps: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("livedenoise"):
                deps.add(node.module)
                deps |= {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that returns to its start, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep):], dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


@pytest.mark.parametrize("package", ["acquisition", "attach", "batch", "evaluate", "io", "models", "training"])
def test_no_import_cycle_inside_a_package(package):
    prefix = f"livedenoise.{package}."
    full = import_graph()
    graph = {m: {d for d in deps if d.startswith(prefix)} for m, deps in full.items() if m.startswith(prefix)}
    assert len(graph) > 1
    # a module importing its own package's __init__ would import every sibling: a cycle the graph cannot see
    assert not [m for m in graph if prefix[:-1] in full[m]], [m for m in graph if prefix[:-1] in full[m]]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_evaluation_report_reads_results_without_importing_the_runs():
    deps = import_graph()["livedenoise.evaluate.report"]
    assert deps, "the report's imports were not found"
    runs = {f"livedenoise.evaluate.{m}" for m in ("run", "methods", "tasks", "real_pairs", "settings")}
    assert not deps & runs, sorted(deps & runs)
    assert {"livedenoise.evaluate.experiments", "livedenoise.evaluate.machine"} <= deps
