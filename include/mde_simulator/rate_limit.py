"""Sliding-window call limits per (client id, tenant), exact at the window edges.

Rule (what client authors must plan for):
- A call at time t is admitted iff, for every window (limit L, length W), fewer than L
  recorded calls of the same budget lie in (t - W, t].
- Every authenticated API call is recorded, admitted or not: a call refused with 429
  still counts, so calling during a throttle prolongs it. Only admitted calls can be at
  most L per window; admitted + refused together can exceed L.
- Retry-After = ceil(d) where d is the smallest wait after which a call would be
  admitted if no other call is made meanwhile (it is >= 1).
- Budget: "shared" = one per (client, tenant) for list and ips calls together;
  "per-endpoint" = one per (client, tenant, endpoint).
"""
from __future__ import annotations

import bisect
import math
import threading
import time
from dataclasses import dataclass


@dataclass
class Decision:
    admitted: bool
    at: float                         # the timestamp the call was recorded with
    retry_after: int | None = None    # whole seconds, only when refused
    window: tuple | None = None       # (limit, seconds) that refused the call


class SlidingWindowLimiter:
    def __init__(self, windows, scope: str = "shared", clock=time.time):
        self._clock = clock          # the seam for unit tests; the server uses wall time
        self._lock = threading.Lock()
        self._logs: dict[tuple, list[float]] = {}
        self.configure(windows, scope)

    def configure(self, windows=None, scope=None) -> None:
        with self._lock:
            if windows is not None:
                self.windows = [(int(limit), float(seconds)) for limit, seconds in windows]
            if scope is not None:
                self.scope = scope

    def budget_key(self, client_id: str, tenant_id: str, endpoint: str) -> tuple:
        return (client_id, tenant_id, "all" if self.scope == "shared" else endpoint)

    def reset(self) -> None:
        with self._lock:
            self._logs.clear()

    def admit(self, client_id: str, tenant_id: str, endpoint: str) -> Decision:
        with self._lock:
            log = self._logs.setdefault(self.budget_key(client_id, tenant_id, endpoint), [])
            now = self._clock()
            if log and now < log[-1]:
                now = log[-1]  # keep the log ordered if the wall clock steps back
            refusing = None
            for limit, seconds in self.windows:
                in_window = len(log) - bisect.bisect_right(log, now - seconds)
                if in_window >= limit:
                    refusing = (limit, seconds)
                    break
            log.append(now)
            longest = max(seconds for _, seconds in self.windows)
            if len(log) > 4096 and log[0] <= now - longest:
                del log[: bisect.bisect_right(log, now - longest)]
            if refusing is None:
                return Decision(True, now)
            wait, window = 0.0, refusing
            for limit, seconds in self.windows:
                first_in = bisect.bisect_right(log, now - seconds)
                if len(log) - first_in >= limit:
                    # The (n-L+1)-th newest call must leave (t'-W, t']: t' >= e + W.
                    candidate = log[len(log) - limit] + seconds - now
                    if candidate > wait:
                        wait, window = candidate, (limit, seconds)
            return Decision(False, now, max(1, math.ceil(wait - 1e-9)), window)
