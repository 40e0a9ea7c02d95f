"""The package's import graph: no cycles, and the training config at the bottom of training.

Read from the source with ast (nothing is imported): every module-level import of an
fmnist module, including those under ``if TYPE_CHECKING:`` (a cycle of type hints is still
two modules that cannot be understood one without the other). Imports inside functions are
left out: they are how a lower layer names an upper one's types lazily.
"""

from __future__ import annotations

import ast
from pathlib import Path

import fmnist

PACKAGE = Path(fmnist.__file__).parent


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _module_level_imports(body: list[ast.stmt]):
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            yield from _module_level_imports(node.body)
            yield from _module_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(handler.body for handler in node.handlers), node.orelse, node.finalbody):
                yield from _module_level_imports(block)


def import_graph() -> dict[str, set[str]]:
    """fmnist module -> the fmnist modules it imports at module level. ``from pkg import
    name`` counts as importing ``pkg.name`` when that is a module, else ``pkg``."""
    sources = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    modules = {name for name, _ in sources}
    graph: dict[str, set[str]] = {}
    for (name, is_package), path in sources.items():
        targets = set()
        for node in _module_level_imports(ast.parse(path.read_text(encoding="utf-8")).body):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            if node.level:  # relative: from . import x, from ..y import z
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets.update(f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source for alias in node.names)
        resolved = set()
        for target in targets:
            while target and target not in modules:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target and target != name:
                resolved.add(target)
        graph[name] = resolved
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each cycle once, as a path that returns to its start (strongly connected components
    of more than one module, Tarjan's algorithm, with one cycle through each)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_through(component, graph) for component in components]


def _cycle_through(component: set[str], graph: dict[str, set[str]]) -> list[str]:
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:  # breadth first, back to start: the shortest cycle through it
        node = frontier.pop(0)
        for target in sorted(graph[node] & component):
            if target == start:
                return [*paths[node], start]
            if target not in paths:
                paths[target] = [*paths[node], target]
                frontier.append(target)
    return sorted(component)


def test_the_cycle_finder_finds_a_cycle_and_passes_a_tree() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_the_graph_sees_module_level_and_type_checking_imports() -> None:
    graph = import_graph()
    assert "fmnist.training.config" in graph["fmnist.training.loop"]
    assert "fmnist.training.config" in graph["fmnist.training.hooks"]  # under TYPE_CHECKING


def test_the_package_has_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_the_training_config_imports_nothing_from_training() -> None:
    # Every part of training builds on the config (recipes, features, the loop); the config
    # reaching back into any of them is how config <-> recipes <-> specialist came about.
    # Imports inside functions count here too.
    path = PACKAGE / "training" / "config.py"
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert "fmnist.augment" in imported  # the walk sees the config's imports at all
    assert not [name for name in imported if name == "fmnist.training" or name.startswith("fmnist.training.")]
