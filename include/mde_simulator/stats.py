"""What the simulator saw: calls per endpoint and status, and the densest windows.

The densest-window figures are computed from the recorded timestamps (the same ones
the limiter used), so a benchmark can prove that a client never exceeded a limit.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque

from .timeutil import format_ticks


def max_in_window(stamps: list[float], seconds: float) -> int:
    """Most timestamps inside any half-open window (t - seconds, t]; stamps sorted."""
    best = 0
    left = 0
    for right, stamp in enumerate(stamps):
        while stamps[left] <= stamp - seconds:
            left += 1
        best = max(best, right - left + 1)
    return best


class Stats:
    def __init__(self):
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.since = time.time()
            self.by_endpoint: Counter = Counter()       # (endpoint, status) -> n
            self.faults: Counter = Counter()
            self.tokens_issued = 0
            self.token_failures = 0
            self.tls_handshake_failures = 0   # clients that did not trust the certificate
            self.throttled = 0
            # (client, tenant) -> list of (timestamp, endpoint, admitted)
            self.api_calls: dict[tuple, list] = {}
            # (client, tenant) -> list of (timestamp, status) of scripted answers
            self.scripted: dict[tuple, list] = {}
            self.recent = deque(maxlen=2000)

    def record_request(self, endpoint: str, status, method: str, path: str,
                       client_id: str | None = None, at: float | None = None,
                       request_id: str | None = None) -> None:
        """`at`: the arrival time the rate limiter used (API calls only)."""
        with self._lock:
            self.by_endpoint[(endpoint, str(status))] += 1
            self.recent.append({"time": format_ticks(time.time_ns() // 100, 3),
                                "method": method, "path": path, "endpoint": endpoint,
                                "status": status, "client_id": client_id, "at": at,
                                "request_id": request_id})

    def record_api_call(self, client_id: str, tenant_id: str, endpoint: str, at: float,
                        admitted: bool) -> None:
        with self._lock:
            calls = self.api_calls.setdefault((client_id, tenant_id), [])
            calls.append((at, endpoint, admitted))
            if not admitted:
                self.throttled += 1

    def record_scripted(self, client_id: str, tenant_id: str, at: float, status: int) -> None:
        """A retry_after_script answer went to the call that arrived at ``at``."""
        with self._lock:
            self.scripted.setdefault((client_id, tenant_id), []).append((at, status))

    def record_token(self, issued: bool) -> None:
        with self._lock:
            if issued:
                self.tokens_issued += 1
            else:
                self.token_failures += 1

    def record_tls_handshake_failure(self) -> None:
        with self._lock:
            self.tls_handshake_failures += 1

    def record_fault(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1

    def snapshot(self, windows) -> dict:
        with self._lock:
            calls: dict = {}
            for (endpoint, status), n in sorted(self.by_endpoint.items()):
                calls.setdefault(endpoint, {})[status] = n
            clients = []
            for (client_id, tenant_id), records in sorted(self.api_calls.items()):
                records = sorted(records)
                entry = {"client_id": client_id, "tenant_id": tenant_id,
                         "calls": len(records),
                         "throttled": sum(1 for r in records if not r[2]),
                         "windows": []}
                for limit, seconds in windows:
                    window = {"limit": limit, "seconds": int(seconds) if float(seconds).is_integer() else seconds}
                    for scope in ("all", "list", "ips"):
                        chosen = [r for r in records if scope == "all" or r[1] == scope]
                        window[scope] = {
                            "max_calls": max_in_window([r[0] for r in chosen], seconds),
                            "max_admitted": max_in_window(
                                [r[0] for r in chosen if r[2]], seconds),
                        }
                    entry["windows"].append(window)
                clients.append(entry)
            return {
                "since": self.since,
                "now": time.time(),
                "calls": calls,
                "throttled": self.throttled,
                "tokens_issued": self.tokens_issued,
                "token_failures": self.token_failures,
                "tls_handshake_failures": self.tls_handshake_failures,
                "faults": dict(self.faults),
                "clients": clients,
            }

    def call_log(self) -> list:
        """Every API call's arrival time (the limiter's), per (client, tenant), ascending:
        what a benchmark needs to measure a budget's use over any span it chooses."""
        with self._lock:
            return [{"client_id": client_id, "tenant_id": tenant_id,
                     "calls": [[at, endpoint, admitted] for at, endpoint, admitted in sorted(records)],
                     "scripted": [list(answer) for answer in sorted(self.scripted.get((client_id, tenant_id), []))]}
                    for (client_id, tenant_id), records in sorted(self.api_calls.items())]

    def recent_requests(self) -> list:
        with self._lock:
            return list(self.recent)
