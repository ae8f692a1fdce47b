"""The package's layer rules (docs/DESIGN.md, "Layers"), checked on every `make test`.

import-linter checks the import graph (.importlinter at the repo root); the two rules it
cannot express are checked here on the source text: no module imports another module's
private name, and no source module grows past about 400 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

from importlinter.cli import lint_imports

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "plugins" / "mde_pipeline"
MAX_MODULE_LINES = 400


def test_import_contracts_hold(monkeypatch):
    monkeypatch.chdir(REPO)
    assert lint_imports(config_filename=str(REPO / ".importlinter")) == 0


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_imports_another_modules_private_name():
    offenders = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mde_pipeline"):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.endswith("__")]
                if private:
                    offenders.append(f"{path.relative_to(REPO)}: from {node.module} import {', '.join(private)}")
    assert offenders == []


def test_no_source_module_is_past_the_size_limit():
    sizes = {str(path.relative_to(REPO)): len(path.read_text().splitlines()) for path in _modules()}
    assert {name: lines for name, lines in sizes.items() if lines > MAX_MODULE_LINES} == {}
