"""The import graph of the project's own modules, read from the source (every import, a function-local one included):
no layer imports a layer above it, and no cycles between modules. `python tests/test_import_graph.py` prints the
cycles and the layer violations it finds."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("configtypes", "engines", "embodied_data", "weightsync", "actors", "perception", "rollout", "rewards",
            "learner", "cluster", "bench")
# Which packages each may import (besides itself): the layers of DESIGN.md, bottom first. Data code knows no models;
# learner/ knows nothing of generation engines or video; rewards/ and perception/ never reach into learner/ or cluster/.
ALLOWED = {
    "configtypes": set(),
    "embodied_data": {"configtypes"},
    "engines": {"configtypes", "weightsync", "actors"},  # the engines' weight receivers; vLLM's tensor-parallel placement
    "weightsync": {"configtypes"},
    "actors": {"configtypes"},
    "perception": {"configtypes", "engines", "embodied_data", "actors"},
    "rollout": {"configtypes", "engines", "embodied_data", "actors", "weightsync"},
    "rewards": {"configtypes", "engines", "embodied_data", "actors"},
    "learner": {"configtypes", "weightsync"},
    "cluster": {"configtypes", "engines", "embodied_data", "weightsync", "actors", "perception", "rollout", "rewards",
                "learner"},
    "bench": set(PACKAGES) - {"bench"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (a `from package import name` counts as the submodule when one exists)."""
    modules = {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        layer = module.split(".")[0]
        for target in sorted(targets):
            other = target.split(".")[0]
            if other != layer and other not in ALLOWED[layer]:
                problems.append(f"{module} imports {target} ({layer}/ may not import {other}/)")
    return problems


def test_no_layer_imports_a_layer_above_it():
    assert layer_violations(import_graph()) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


if __name__ == "__main__":
    graph = import_graph()
    print(f"{len(graph)} modules, {sum(len(t) for t in graph.values())} imports between them")
    for group in cycles(graph):
        print("cycle:", " <-> ".join(group))
    for problem in layer_violations(graph):
        print("layer:", problem)
