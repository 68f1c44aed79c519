"""No import cycles inside ``pss/`` and ``pss_app/`` (DESIGN.md: the arrows between layers go one way).

The graph is built from the source (AST), not by importing it: an edge ``a -> b`` for every ``import b`` /
``from b import x`` in ``a``, wherever it stands (a function-level import that dodges a cycle at import time is
still a cycle in the design). Only imports under ``if TYPE_CHECKING:`` are left out: they never run.
``from pkg import name`` is an edge to the submodule ``pkg.name`` when that file exists, else to ``pkg`` (its
``__init__``). Importing ``pkg.mod`` also runs ``pkg/__init__``, but that implicit edge is not drawn: with it every
package that re-exports its own modules would be a cycle.

Run as a script (``python tests/test_import_cycles.py``) to print every cycle.
"""
from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pss", "pss_app")

def module_files(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``packages`` (``pkg/__init__.py`` is ``pkg``)."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement of ``tree`` except those in the body of an ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)  # the else branch does run
        else:
            stack.extend(ast.iter_child_nodes(node))


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (see the module docstring for what counts)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[frozenset[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return sorted(found, key=lambda c: sorted(c))


def one_cycle(graph: dict[str, set[str]], component: frozenset[str]) -> list[str]:
    """A shortest closed path inside ``component`` from its first module (for a readable failure message)."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node] & component):
                if child == start:
                    return paths[node] + [start]
                if child not in paths:
                    paths[child] = paths[node] + [child]
                    nxt.append(child)
        frontier = nxt
    return [start]  # unreachable for a strongly connected component


def test_graph_builder_sees_function_level_imports_and_skips_type_checking(tmp_path: Path) -> None:
    pkg = tmp_path / "p"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from p.b import g\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nfrom . import c\nif TYPE_CHECKING:\n"
                              "    from p.a import f\n")
    (pkg / "c.py").write_text("import p.a\n")
    graph = import_graph(module_files(tmp_path, ["p"]))
    assert graph["p.a"] == {"p.b"} and graph["p.b"] == {"p.c"} and graph["p.c"] == {"p.a"}
    assert cycles(graph) == [frozenset({"p.a", "p.b", "p.c"})]
    assert one_cycle(graph, cycles(graph)[0]) == ["p.a", "p.b", "p.c", "p.a"]


def test_no_import_cycles() -> None:
    graph = import_graph(module_files())
    message = [f"import cycle: {' -> '.join(one_cycle(graph, c))} (modules: {', '.join(sorted(c))}); "
               "move what both sides need into a module of the lower layer" for c in cycles(graph)]
    assert not message, "\n".join(message)


if __name__ == "__main__":
    _graph = import_graph(module_files())
    for _component in cycles(_graph):
        print(f"{len(_component):3d} modules: {' -> '.join(one_cycle(_graph, _component))}")
        print("      all: " + ", ".join(sorted(_component)))
    sys.exit(0)
