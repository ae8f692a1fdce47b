"""Write .env from one of the example files, with fresh secrets for this deployment.

    python3 include/deploy/make_env.py .env.example .env          # a real tenant
    python3 include/deploy/make_env.py .env.local.example .env    # the local sandbox

In the template, these markers are replaced (each occurrence gets its own value):

    __GENERATE_FERNET_KEY__   a Fernet key (32 random bytes, url-safe base64)
    __GENERATE_SECRET__       32 random bytes as url-safe text (safe inside URLs)
    __HOST_UID__              the user id running this script (AIRFLOW_UID on Linux)

``<...>`` placeholders are left for you to fill in; the script lists them. It never
overwrites an existing file and creates the new one readable by its owner only.
Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
import sys
from pathlib import Path

MARKERS = {
    "__GENERATE_FERNET_KEY__": lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii"),
    "__GENERATE_SECRET__": lambda: secrets.token_urlsafe(32),
    "__HOST_UID__": lambda: str(os.getuid()) if hasattr(os, "getuid") else "50000",
}
MARKER = re.compile("|".join(re.escape(marker) for marker in MARKERS))
PLACEHOLDER = re.compile(r"<[^<>\s][^<>]*>")
ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")


def render(template: str) -> str:
    """The template with every marker replaced by a fresh value."""
    return MARKER.sub(lambda match: MARKERS[match.group(0)](), template)


def unfilled(text: str) -> list[str]:
    """Names of the variables whose value still holds a ``<...>`` placeholder."""
    names = []
    for line in text.splitlines():
        match = ASSIGNMENT.match(line)
        if match and PLACEHOLDER.search(match.group(2)):
            names.append(match.group(1))
    return names


def write_new(path: Path, text: str) -> None:
    """Create ``path`` (mode 600); fail if it exists rather than lose its secrets."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("template", type=Path, help=".env.example or .env.local.example")
    parser.add_argument("target", type=Path, help="the file to create, normally .env")
    args = parser.parse_args(argv)

    if args.target.exists():
        print(f"{args.target} exists; not overwriting it (delete it first to start over)", file=sys.stderr)
        return 1
    try:
        template = args.template.read_text(encoding="utf-8")
    except OSError as exc:
        print(f"cannot read template {args.template}: {exc.strerror}", file=sys.stderr)
        return 1
    text = render(template)
    write_new(args.target, text)
    print(f"wrote {args.target} from {args.template} with fresh secrets")
    todo = unfilled(text)
    if todo:
        print(f"now fill in the <...> placeholders of: {', '.join(todo)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
