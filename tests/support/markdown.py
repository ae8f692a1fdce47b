"""The fenced code blocks of a markdown document (the docs' tests read them)."""

from __future__ import annotations

import re
from typing import Iterator, NamedTuple

FENCE = re.compile(r"^(\s*)```(\w*)\s*$")


class Block(NamedTuple):
    start: int  # index of the opening fence line
    lang: str  # "" for an unlabelled fence
    body: list[str]  # the lines between the fences


def fenced_blocks(rows: list[str]) -> Iterator[Block]:
    """Every fenced block of ``rows`` (the document's lines), in order."""
    index = 0
    while index < len(rows):
        fence = FENCE.match(rows[index])
        if not fence:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(rows)) if rows[i].strip() == "```")
        yield Block(index, fence.group(2), rows[index + 1 : end])
        index = end + 1
