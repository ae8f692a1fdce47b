"""How long the service asks us to wait (``Retry-After``, read safely) and how long we wait.

Why not azure-core's ``get_retry_after``: it raises a bare ``ValueError`` on a garbage
HTTP-date and keeps any number (``inf``, ``999999999``, negative). A Retry-After comes
from the service *or from whatever sits in front of it* (a proxy, a gateway), so one
bad header must never stop a run, nor block every task on the host for days through
the shared ledger.

Rules (docs/DESIGN.md "Bounded waits"):

- A Retry-After is *usable* when it is a number of seconds or an HTTP-date, finite,
  not negative, and at most the longest configured rate window plus
  :data:`~mde_pipeline.api.windows.BLOCK_SLACK_SECONDS` (the service's own throttle
  never outlasts its longest window; ``max_block_seconds``). An HTTP-date in the past means "now" (clock skew), i.e. 0.
- Anything else (negative, ``inf``/``nan``, ``soon``, a bad date, 999999999) is
  *implausible*: treated like a missing header.
- A 429's wait is ``max(usable Retry-After, backoff)``, where the backoff of the n-th
  429 of one call is ``min(cap, first * 2 ** (n - 1))``. So ``Retry-After: 0`` (or a
  missing / implausible one) backs off 2, 4, 8, ... s instead of hammering the
  service, and an honest long Retry-After is honoured as sent.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Mapping

from mde_pipeline.api.windows import BLOCK_SLACK_SECONDS

log = logging.getLogger(__name__)

_SECONDS = re.compile(r"^[+-]?\d+(\.\d+)?$")
_NOT_FINITE = re.compile(r"^[+-]?(inf|infinity|nan)$", re.IGNORECASE)
_SHOWN = 40  # a header value in a log line is data from the network: trimmed, repr'd


@dataclass(frozen=True)
class RetryAfter:
    """One answer's Retry-After: ``seconds`` when usable, else None (missing or refused)."""

    seconds: float | None
    raw: str | None = None  # the header as sent, trimmed (None: no header)
    problem: str | None = None  # why ``raw`` was refused

    @property
    def implausible(self) -> bool:
        return self.problem is not None

    def shown(self) -> str:
        return repr((self.raw or "")[:_SHOWN])


def read_retry_after(headers: Mapping[str, str], *, now: float, longest_seconds: float) -> RetryAfter:
    """The Retry-After of ``headers`` judged against ``longest_seconds``; never raises."""
    raw = headers.get("Retry-After")
    if raw is None or not str(raw).strip():
        return RetryAfter(None)
    text = str(raw).strip()
    seconds, problem = _parse(text, now)
    if problem is None and seconds is not None and seconds > longest_seconds:
        problem = f"longer than the longest rate window plus {BLOCK_SLACK_SECONDS:g}s ({longest_seconds:g}s)"
    return RetryAfter(None, text, problem) if problem else RetryAfter(seconds, text)


def _parse(text: str, now: float) -> tuple[float | None, str | None]:
    if _NOT_FINITE.match(text):
        return None, "not finite"
    if _SECONDS.match(text):
        seconds = float(text)
        if not math.isfinite(seconds):
            return None, "not finite"
        return (None, "negative") if seconds < 0 else (seconds, None)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None, "neither seconds nor an HTTP-date"
    if when.tzinfo is None:  # "-0000" in an HTTP-date means UTC
        when = when.replace(tzinfo=timezone.utc)
    try:
        seconds = when.timestamp() - now
    except (OverflowError, OSError, ValueError):
        return None, "an HTTP-date out of range"
    return max(0.0, seconds), None  # a date in the past: retry now (the backoff floor still applies)


def throttle_wait(retry_after: RetryAfter, throttles: int, *, first: float, cap: float) -> float:
    """Seconds to wait after the ``throttles``-th 429 (1, 2, ...) of one call."""
    backoff = min(cap, first * 2 ** max(0, throttles - 1))
    return backoff if retry_after.seconds is None else max(retry_after.seconds, backoff)


def capped_server_wait(retry_after: RetryAfter, backoff: float, *, cap: float) -> float:
    """A 5xx/408's wait: its usable Retry-After or the backoff, never more than ``cap``."""
    wait = backoff if retry_after.seconds is None else retry_after.seconds
    return min(wait, cap)


class RetryAfterReader:
    """Reads one client's Retry-After headers (never raises) and logs an implausible
    one once per client: a proxy answering every call with garbage must not flood the
    task log, but the user must learn why the waits do not follow the header."""

    def __init__(self, now: Callable[[], float], *, longest_seconds: float, first_backoff: float, backoff_cap: float):
        self._now = now
        self.longest_seconds = longest_seconds
        self.first_backoff = first_backoff
        self.backoff_cap = backoff_cap
        self._logged = threading.Event()

    def read(self, http_response: Any) -> RetryAfter:
        retry_after = read_retry_after(http_response.headers, now=self._now(), longest_seconds=self.longest_seconds)
        if retry_after.implausible and not self._logged.is_set():
            self._logged.set()
            log.warning(
                "MDE API (or a proxy) answered HTTP %d with an implausible Retry-After %s (%s): ignored, backing "
                "off instead; never written to the rate-limit ledger (logged once per client)",
                http_response.status_code,
                retry_after.shown(),
                retry_after.problem,
            )
        return retry_after

    def throttle_wait(self, http_response: Any, throttles: int) -> float:
        """The wait after the ``throttles``-th 429 of one call (see the module docstring)."""
        return throttle_wait(self.read(http_response), throttles, first=self.first_backoff, cap=self.backoff_cap)
