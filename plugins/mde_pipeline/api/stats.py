"""What one client spent: attempts, 429s, retries, seconds waited (thread-safe counters)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

@dataclass
class ClientStats:
    """What one client spent: attempts sent, 429s seen, retried attempts, and seconds
    waited (for budget, for Retry-After, or backing off)."""

    calls: int = 0
    throttled: int = 0
    retries: int = 0
    wait_seconds: float = 0.0

    def __post_init__(self) -> None:
        # Not a field: dataclasses.asdict()/replace() of stats must keep working.
        self._lock = threading.Lock()

    def add(self, *, calls: int = 0, throttled: int = 0, retries: int = 0, wait_seconds: float = 0.0) -> None:
        with self._lock:
            self.calls += calls
            self.throttled += throttled
            self.retries += retries
            self.wait_seconds += wait_seconds

    def snapshot(self) -> "ClientStats":
        with self._lock:
            return ClientStats(self.calls, self.throttled, self.retries, self.wait_seconds)


# --------------------------------------------------------------------------- policies

STAT_FIELDS = ("calls", "throttled", "retries", "wait_seconds")


def stats_of(client: Any) -> dict[str, float]:
    """A client's counters as a dict; zeros for a client without stats (a test double)."""
    stats = getattr(client, "stats", None)
    return {name: getattr(stats, name, 0) or 0 for name in STAT_FIELDS}
