"""Test doubles for the API layer: a manual clock and a one-process ledger."""

from __future__ import annotations

import bisect
import itertools
import threading
from typing import Sequence

from mde_pipeline.api.backfill_reserve import load_waiting_until, retention_seconds
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
    """Ledger for one process: unit tests only (the product needs one shared across processes).

    Keeps each key's reservations as sorted (time, entry) lists, all and background
    ones apart, so hours of reservations at the real windows stay fast to simulate."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, list[tuple[float, int]]] = {}
        self._background: dict[str, list[tuple[float, int]]] = {}
        self._times: dict[int, float] = {}  # entry -> its time in the lists
        self._blocked: dict[str, float] = {}
        self._waiting: dict[str, float] = {}  # the load-waiting mark
        self._next_entry = itertools.count(1)

    @staticmethod
    def _prune(entries: list[tuple[float, int]], horizon: float) -> None:
        del entries[: bisect.bisect_right(entries, (horizon, float("inf")))]

    def reserve(self, key: str, now: float, windows: Sequence[Window], background: Sequence[Window] | None = None) -> Decision:
        kept = retention_seconds(windows)
        with self._lock:
            calls = self._calls.setdefault(key, [])
            kept_background = self._background.setdefault(key, [])
            self._prune(calls, now - kept)
            self._prune(kept_background, now - kept)
            if key in self._blocked:  # clipped like SqliteLedger, and kept clipped
                self._blocked[key] = clip_block(self._blocked[key], now, windows)
            waiting = self._waiting.get(key, 0.0)
            decision = decide(
                [t for t, _ in calls], self._blocked.get(key, 0.0), now, windows, background,
                [t for t, _ in kept_background], waiting,
            )  # fmt: skip
            if background is None:
                self._waiting[key] = load_waiting_until(waiting, now, decision.wait_seconds)
            if decision.wait_seconds <= 0:
                entry = next(self._next_entry)
                bisect.insort(calls, (now, entry))
                self._times[entry] = now
                if background is not None:
                    bisect.insort(kept_background, (now, entry))
                return decision._replace(entry=entry)
            return decision

    def settle(self, key: str, entry: int, at: float) -> None:
        with self._lock:
            held = (self._times.get(entry), entry)
            if held[0] is None or at <= held[0]:
                return
            for entries in (self._calls.get(key, []), self._background.get(key, [])):
                index = bisect.bisect_left(entries, held)
                if index < len(entries) and entries[index] == held:  # still kept (not pruned)
                    del entries[index]
                    bisect.insort(entries, (at, entry))
            self._times[entry] = at

    def block_until(self, key: str, until: float) -> None:
        with self._lock:
            self._blocked[key] = max(self._blocked.get(key, 0.0), until)

    def blocked_until(self, key: str) -> float:
        with self._lock:
            return self._blocked.get(key, 0.0)

    def reservations(self, key: str) -> list[float]:
        with self._lock:
            return [t for t, _ in self._calls.get(key, [])]

