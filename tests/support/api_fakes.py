"""Test doubles for the API layer: a manual clock and a one-process ledger."""

from __future__ import annotations

import itertools
import threading
from typing import Sequence

from mde_pipeline.api.ledgers import Decision, clip_block, decide
from mde_pipeline.api.windows import Window


class FakeClock:
    """Manual clock: ``sleep`` advances time instantly and records the sleep."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self._now += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


class InMemoryLedger:
    """Ledger for one process: unit tests only (the product needs one shared across processes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, dict[int, float]] = {}
        self._background: set[int] = set()
        self._foreground_minutes: dict[str, dict[int, int]] = {}
        self._blocked: dict[str, float] = {}
        self._next_entry = itertools.count(1)

    def reserve(self, key: str, now: float, windows: Sequence[Window], background: Sequence[Window] | None = None) -> Decision:
        longest = max(w.seconds for w in windows)
        with self._lock:
            calls = {entry: t for entry, t in self._calls.get(key, {}).items() if t > now - longest}
            self._calls[key] = calls
            if key in self._blocked:  # clipped like SqliteLedger, and kept clipped
                self._blocked[key] = clip_block(self._blocked[key], now, windows)
            kept_background = sorted(t for entry, t in calls.items() if entry in self._background)
            decision = decide(sorted(calls.values()), self._blocked.get(key, 0.0), now, windows, background, kept_background)
            if decision.wait_seconds <= 0:
                entry = next(self._next_entry)
                calls[entry] = now
                if background is not None:
                    self._background.add(entry)
                else:
                    minutes = self._foreground_minutes.setdefault(key, {})
                    minutes[int(now // 60)] = minutes.get(int(now // 60), 0) + 1
                return decision._replace(entry=entry)
            return decision

    def foreground_minutes(self, key: str, since_minute: int) -> dict[int, int]:
        with self._lock:
            return {m: c for m, c in self._foreground_minutes.get(key, {}).items() if m >= since_minute}

    def settle(self, key: str, entry: int, at: float) -> None:
        with self._lock:
            calls = self._calls.get(key, {})
            if entry in calls:
                calls[entry] = max(calls[entry], at)

    def block_until(self, key: str, until: float) -> None:
        with self._lock:
            self._blocked[key] = max(self._blocked.get(key, 0.0), until)

    def blocked_until(self, key: str) -> float:
        with self._lock:
            return self._blocked.get(key, 0.0)

    def reservations(self, key: str) -> list[float]:
        with self._lock:
            return sorted(self._calls.get(key, {}).values())

