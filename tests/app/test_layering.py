"""The layer rules of DESIGN.md, checked on the source: the app reaches the engine through ``pss.api`` only, and the
engine's own tests never need the app.

An AST scan (not a grep) so that imports inside functions count as much as those at the top of a module.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP_ALLOWED = ("pss.api", "pss.errors", "pss.config")  # DESIGN.md: the app imports these (and their submodules)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in ``path``: ``import a.b`` gives ``a.b``; ``from a import b`` gives
    ``a.b`` as well, so ``from pss import runs`` is seen as ``pss.runs``. Relative imports are resolved
    against the file's package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1]) if path.is_relative_to(ROOT) else ""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found += [(node.lineno, f"{base}.{alias.name}" if alias.name != "*" else base) for alias in node.names]
    return found


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_the_app_imports_the_engine_through_pss_api_only() -> None:
    offenders = []
    for path in sorted((ROOT / "pss_app").rglob("*.py")):
        for line, module in imported_modules(path):
            if (_within(module, "pss") and not any(_within(module, ok) for ok in APP_ALLOWED)
                    and not _within(module, "pss.api")):
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {module}")
    assert not offenders, "pss_app may import only pss.api, pss.errors and pss.config:\n" + "\n".join(offenders)


def test_engine_tests_do_not_import_the_app() -> None:
    offenders = [f"{path.relative_to(ROOT)}:{line}: {module}"
                 for path in sorted((ROOT / "tests").glob("*.py"))  # tests/app and tests/reliability may
                 for line, module in imported_modules(path) if _within(module, "pss_app")]
    assert not offenders, "tests directly in tests/ test the engine and pss.api, not the app:\n" + "\n".join(offenders)


def test_the_scan_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from pss.runs import RunRecord\n    import pss.data.labels\n")
    assert [m for _, m in imported_modules(source)] == ["pss.runs.RunRecord", "pss.data.labels"]


def _runtime_imports(path: Path) -> list[str]:
    """Modules ``path`` imports when it runs (top level or inside functions), leaving out ``if TYPE_CHECKING:``
    blocks. ``from pkg import name`` runs ``pkg/__init__.py``, so it counts as ``pkg``, and as ``pkg.name`` too when
    that is a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
                   for child in node.body for n in ast.walk(child)}
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append(node.module)
            found += [f"{node.module}.{alias.name}" for alias in node.names
                      if _module_path(f"{node.module}.{alias.name}") is not None]
    return found


def _module_path(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_no_import_cycles_in_the_api_and_the_app_services() -> None:
    """Function-level imports that dodge a cycle count as the cycle; ``TYPE_CHECKING`` imports do not."""
    roots = ("pss.api", "pss_app")
    graph: dict[str, set[str]] = {}
    for package in roots:
        for path in sorted(ROOT.joinpath(*package.split(".")).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            graph[module] = {m for m in _runtime_imports(path) if any(_within(m, r) for r in roots) and m != module}
    cycles: list[str] = []

    def visit(module: str, trail: list[str]) -> None:
        for target in sorted(graph.get(module, ())):
            if target in trail:
                cycle = trail[trail.index(target):] + [target]
                # a package's __init__ importing its own submodules is how a package is built, not a cycle
                if not all(_within(b, a) for a, b in zip(cycle, cycle[1:], strict=False)):
                    cycles.append(" -> ".join(cycle))
            elif target not in done:
                visit(target, trail + [target])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles)))
