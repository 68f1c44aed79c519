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
