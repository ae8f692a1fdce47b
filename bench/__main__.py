"""``python -m bench <name> [options]``: run benchmark ``bench/<name>.py``.

``python -m bench`` alone lists the benchmarks.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys
from pathlib import Path

_NAME = re.compile(r"[a-z][a-z0-9_]*")


def available() -> list[str]:
    """Modules of this package that define ``main``."""
    names = []
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if module.name.startswith("_"):
            continue
        if "def main(" in (Path(__file__).parent / f"{module.name}.py").read_text(encoding="utf-8", errors="replace"):
            names.append(module.name)
    return sorted(names)


def main(argv: list[str]) -> int:
    names = available()
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m bench <name> [options]   (<name> --help for its options)")
        print("benchmarks: " + (", ".join(names) or "none"))
        return 0 if argv else 2
    name = argv[0]
    if not _NAME.fullmatch(name) or name not in names:
        print(f"unknown benchmark {name!r}; available: {', '.join(names) or 'none'}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.{name}")
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
