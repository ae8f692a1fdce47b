"""The package's layer rules (docs/DESIGN.md, "Layers"), checked on every `make test`.

import-linter checks the import graph (.importlinter at the repo root); the two rules it
cannot express are checked here on the source text: no module imports another module's
private name, and no source module grows past about 400 lines.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "plugins" / "mde_pipeline"
MAX_MODULE_LINES = 400


def test_import_contracts_hold():
    # A subprocess: import-linter's CLI reconfigures logging (disabling every existing
    # logger), which would blind the caplog-based tests sharing this worker.
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins")}
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint), "--config", str(REPO / ".importlinter"), "--no-cache"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


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
