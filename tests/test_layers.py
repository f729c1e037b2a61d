"""The package's layers: `cli` parses, `commands` runs and prints, the library computes; no import circles.

Every import statement of every module counts, at module level and inside functions alike (a lazy
import is still a dependency), except inside `if __name__ == "__main__":` (an entry point, not a
dependency). Library modules never import `cli` or `commands`; the commands layer never imports
`cli`; and the import graph has no cycle except the forecasting backend registry
(`hftraining.forecasting.base` loads its backends by name, and they build on it).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hftraining"
UPPER = ("hftraining.cli", "hftraining.__main__")
COMMANDS = "hftraining.commands"
REGISTRY = {"hftraining.forecasting.base", "hftraining.forecasting.chronos_backend",
            "hftraining.forecasting.statistical", "hftraining.forecasting.toto_backend"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_main_guard(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__")


def _statements(tree: ast.AST):
    """Every node of the tree except what sits under an `if __name__ == "__main__":`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if _is_main_guard(node):
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _resolve(name: str) -> str | None:
    """The package module an imported dotted name lands in (a name inside a module: that module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    found = set()
    for node in _statements(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]     # a submodule, or a name in one
        else:
            continue
        for name in names:
            if name.split(".")[0] == "hftraining":
                target = _resolve(name)
                if target is not None and target != module:
                    found.add(target)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def layer(module: str) -> str:
    if module in UPPER:
        return "cli"
    if module == COMMANDS or module.startswith(COMMANDS + "."):
        return "commands"
    return "library"


def test_the_graph_sees_function_level_imports():
    assert "hftraining.commands.single" in GRAPH["hftraining.cli"]          # imported inside a command function
    assert "hftraining.cli" not in GRAPH["hftraining.base_model_trainer"]    # only its __main__ block names it


def test_library_modules_never_import_the_upper_layers():
    wrong = [f"{module} imports {target}" for module, targets in GRAPH.items() for target in sorted(targets)
             if (layer(module) == "library" and layer(target) != "library")
             or (layer(module) == "commands" and layer(target) == "cli")]
    assert not wrong, "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_except_the_forecasting_registry():
    cycles = [c for c in _cycles(GRAPH) if not set(c) <= REGISTRY]
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
