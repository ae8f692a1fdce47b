"""The layer rules of lake/ and analytics/, checked on the source (no import needed).

lake/ imports neither the API, the Airflow face, analytics nor Airflow itself;
analytics/ imports lake/ and common/ only; no import cycle inside lake/; no module
imports another module's private name; no module is much over 400 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "plugins" / "mde_pipeline"
MAX_LINES = 400


def modules(layer: str) -> dict[str, Path]:
    return {f"mde_pipeline.{layer}.{p.stem}": p for p in sorted((PACKAGE / layer).glob("*.py"))}


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) of every import in the file, lazy ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def allowed(module: str, prefixes: tuple[str, ...]) -> bool:
    return not module.startswith("mde_pipeline") or module.startswith(prefixes)


@pytest.mark.parametrize(
    "layer, project_prefixes",
    [
        ("lake", ("mde_pipeline.lake", "mde_pipeline.common")),
        ("analytics", ("mde_pipeline.analytics", "mde_pipeline.lake", "mde_pipeline.common")),
    ],
)
def test_layers_import_downhill_only(layer, project_prefixes):
    for name, path in modules(layer).items():
        for module, _ in imports(path):
            assert allowed(module, project_prefixes), f"{name} imports {module}"
            assert module.split(".")[0] != "airflow", f"{name} imports Airflow"


def test_no_private_names_across_modules_and_no_long_modules():
    for layer in ("lake", "analytics"):
        for name, path in modules(layer).items():
            for module, names in imports(path):
                if module.startswith("mde_pipeline"):
                    assert not [n for n in names if n.startswith("_")], f"{name} imports a private name of {module}"
            assert len(path.read_text().splitlines()) <= MAX_LINES, f"{name} is over {MAX_LINES} lines"


def test_no_import_cycle_in_the_lake():
    lake = modules("lake")
    graph = {name: {m for m, _ in imports(path) if m in lake and m != name} for name, path in lake.items()}
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == "done":
            return
        assert state.get(node) != "open", "import cycle: " + " -> ".join(trail + [node])
        state[node] = "open"
        for target in sorted(graph[node]):
            visit(target, trail + [node])
        state[node] = "done"

    for name in graph:
        visit(name, [])
    # The hourly commit may invalidate the IP index, but ip_index never reaches back.
    assert "mde_pipeline.lake.commit" not in graph["mde_pipeline.lake.ip_index"]
    assert "mde_pipeline.lake.compaction" not in graph["mde_pipeline.lake.ip_index"]
