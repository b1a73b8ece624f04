"""The layers of the code, held by import rules (read from the source, function-level imports included).

``schemas`` (read and validate exports) → ``analytics.engines`` (pure numerics) → ``analytics.outcomes`` (the cohort
and its analyses) → ``analytics.privacy`` / ``analytics.report`` → the edges (``analytics.cli``, ``analytics.store``,
``analytics.sample``) → ``pages`` and ``dashboard.py``. ``analytics.errors`` and ``analytics.formatting`` are shared
vocabulary (``analytics.errors`` is the classes of ``schemas.errors``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module the file imports, at any depth of the file (``from a import b`` counts ``a`` and ``a.b``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


MODULES = {_module_name(p): p for top in ("analytics", "schemas", "pages") for p in (ROOT / top).rglob("*.py")}
MODULES["dashboard"] = ROOT / "dashboard.py"
IMPORTS = {m: {i for i in _imports(p) if i.split(".")[0] in ("analytics", "schemas", "pages", "streamlit", "plotly")}
           for m, p in MODULES.items()}


def _under(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def _offending(owner: tuple[str, ...], forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    return sorted(f"{m} imports {i}" for m, deps in IMPORTS.items() if _under(m, *owner)
                  for i in deps if _under(i, *forbidden) and not _under(i, *allowed))


def test_the_layers_are_folders():
    for package in ("engines", "outcomes", "privacy", "report"):
        assert (ROOT / "analytics" / package / "__init__.py").is_file()
    assert not [p.name for p in (ROOT / "analytics").glob("*.py")
                if p.stem not in ("__init__", "cli", "store", "sample", "errors", "formatting")]


def test_engines_import_nothing_above_them_nor_schemas():
    assert _offending(("analytics.engines",), ("analytics", "schemas", "pages", "streamlit", "plotly"),
                      allowed=("analytics.engines", "analytics.errors")) == []


def test_outcomes_never_import_the_store_plots_report_or_pages():
    assert _offending(("analytics.outcomes",), ("analytics.store", "analytics.report", "analytics.cli",
                                                "analytics.sample", "pages", "streamlit", "plotly")) == []


def test_privacy_is_applied_to_results_and_knows_no_analysis():
    assert _offending(("analytics.privacy",), ("analytics.outcomes", "analytics.report", "analytics.store",
                                               "analytics.cli", "pages", "streamlit", "plotly")) == []


def test_schemas_never_import_analytics():
    assert _offending(("schemas",), ("analytics", "pages", "streamlit", "plotly")) == []


def test_only_pages_import_streamlit_and_only_the_report_imports_plotly():
    assert _offending(("analytics", "schemas"), ("streamlit",)) == []
    assert [o for o in _offending(("analytics", "schemas"), ("plotly",)) if not o.startswith("analytics.report")] == []


def _cycles(prefix: str) -> list[list[str]]:
    """Strongly connected groups of more than one module among the modules under ``prefix`` (Tarjan)."""
    nodes = [m for m in MODULES if _under(m, prefix)]
    edges = {m: sorted({n for i in IMPORTS[m] for n in nodes if i == n and n != m}) for m in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in nodes:
        if v not in index:
            visit(v)
    return out


@pytest.mark.parametrize("package", ["schemas", "analytics"])
def test_no_import_circles(package):
    assert _cycles(package) == []


def test_the_rules_can_fail():
    """The checks read real imports: a module that broke a rule would be reported."""
    IMPORTS["analytics.engines._probe"] = {"analytics.outcomes.cohort"}
    IMPORTS["schemas._probe"] = {"analytics.errors"}
    try:
        assert _offending(("analytics.engines",), ("analytics",), allowed=("analytics.engines", "analytics.errors")) \
            == ["analytics.engines._probe imports analytics.outcomes.cohort"]
        assert _offending(("schemas",), ("analytics",)) == ["schemas._probe imports analytics.errors"]
    finally:
        del IMPORTS["analytics.engines._probe"], IMPORTS["schemas._probe"]


def test_computation_never_imports_streamlit_or_plotly_at_run_time():
    code = ("import analytics.outcomes.survival, analytics.outcomes.trajectories, analytics.outcomes.benchmarks, "
            "analytics.privacy.suppression, schemas.validate, schemas.mapping, sys; "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('streamlit', 'plotly')], 'UI imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
