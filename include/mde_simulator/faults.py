"""Faults on demand: a seeded share of eligible API calls goes wrong.

One uniform draw per eligible call (an authenticated, admitted call to an endpoint in
`fault_endpoints`) picks at most one fault, so the shares add up and a sequential run
with the same seed sees the same faults on the same calls.
"""
from __future__ import annotations

import random
import threading
from collections import deque

KINDS = ("5xx", "drop", "slow", "malformed", "trickle")
# What a proxy in front of the service answers for a path it does not know.
PROXY_404_PAGE = (b"<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n"
                  b"<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n"
                  b"</body>\r\n</html>\r\n")


class Faults:
    def __init__(self, seed: int, *, fault_5xx=0.0, fault_slow=0.0, slow_seconds=30.0,
                 fault_drop=0.0, fault_malformed=0.0, fault_trickle=0.0, trickle_seconds=30.0,
                 fault_endpoints=("list", "ips", "alert")):
        self._lock = threading.Lock()
        self._rng = random.Random(seed * 104729 + 3)
        self.rates = {"5xx": fault_5xx, "drop": fault_drop, "slow": fault_slow,
                      "malformed": fault_malformed, "trickle": fault_trickle}
        self.slow_seconds = slow_seconds
        self.trickle_seconds = trickle_seconds
        self.endpoints = set(fault_endpoints)
        # Deterministic, not drawn: the next eligible calls answer these, in order.
        self.script: deque = deque()
        # HTML 404 "from a proxy" for /ips: False, True (every call) or a set of alert ids.
        self.proxy_404: bool | set = False
        # Poison: per-alert field overrides in listings (alert id -> {field: value}), fields
        # no schema names added to every listed alert, /ips answering 500 forever or with
        # an item whose id is not a string, for chosen alerts. The ground truth is unchanged.
        self.poison_fields: dict[str, dict] = {}
        self.extra_fields: dict = {}
        self.ips_fail: set = set()
        self.ips_non_string: set = set()

    def check(self, **settings) -> dict:
        """The rates these settings would give; ValueError if they add up to more than 1."""
        rates = {kind: settings.get(f"fault_{kind}", rate) for kind, rate in self.rates.items()}
        if sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError(f"fault rates add up to more than 1: {rates}")
        return rates

    def configure(self, **settings) -> None:
        with self._lock:
            self.rates = self.check(**settings)
            if "slow_seconds" in settings:
                self.slow_seconds = settings["slow_seconds"]
            if "trickle_seconds" in settings:
                self.trickle_seconds = settings["trickle_seconds"]
            if "fault_endpoints" in settings:
                self.endpoints = set(settings["fault_endpoints"])
            if "retry_after_script" in settings:
                self.script = deque(settings["retry_after_script"])
            if "proxy_404" in settings:
                value = settings["proxy_404"]
                self.proxy_404 = value if isinstance(value, bool) else set(value)
            for name in ("poison_fields", "extra_fields"):
                if name in settings:
                    setattr(self, name, dict(settings[name]))
            for name in ("ips_fail", "ips_non_string"):
                if name in settings:
                    setattr(self, name, set(settings[name]))

    def settings(self) -> dict:
        with self._lock:
            return {**{f"fault_{k}": v for k, v in self.rates.items()},
                    "slow_seconds": self.slow_seconds,
                    "trickle_seconds": self.trickle_seconds,
                    "fault_endpoints": sorted(self.endpoints),
                    "retry_after_script": list(self.script),
                    "proxy_404": (self.proxy_404 if isinstance(self.proxy_404, bool)
                                  else sorted(self.proxy_404)),
                    "poison_fields": dict(self.poison_fields), "extra_fields": dict(self.extra_fields),
                    "ips_fail": sorted(self.ips_fail), "ips_non_string": sorted(self.ips_non_string)}

    def poisoned(self, alert_json: dict) -> dict:
        """A listed alert as served: with the extra fields and its poison overrides."""
        with self._lock:
            overrides = self.poison_fields.get(alert_json.get("id"), {})
            if not overrides and not self.extra_fields:
                return alert_json
            return {**alert_json, **self.extra_fields, **overrides}

    def ips_poison(self, alert_id: str) -> str | None:
        """'fail' (500 forever), 'non_string' (an item with a numeric id) or None."""
        with self._lock:
            if alert_id in self.ips_fail:
                return "fail"
            return "non_string" if alert_id in self.ips_non_string else None

    def scripted(self, endpoint: str, tenant_id: str | None = None) -> dict | None:
        """The next scripted answer ({"status", "retry_after"}) for this call, or None.

        An answer naming a tenant waits for a call of that tenant; calls of other
        tenants pass it by (they get the next answer meant for anyone, or none)."""
        with self._lock:
            if endpoint not in self.endpoints:
                return None
            for index, answer in enumerate(self.script):
                if answer.get("tenant_id") in (None, (tenant_id or "").lower()):
                    del self.script[index]
                    return answer
            return None

    def proxied_404(self, alert_id: str | None) -> bool:
        """True when the "proxy" answers this /ips call with its HTML 404 page."""
        with self._lock:
            return self.proxy_404 is True or (isinstance(self.proxy_404, set)
                                              and alert_id in self.proxy_404)

    def draw(self, endpoint: str) -> str | None:
        """The fault for this call ('500', '503', 'drop', 'slow', 'malformed', 'trickle') or None."""
        with self._lock:
            if endpoint not in self.endpoints or not any(self.rates.values()):
                return None
            roll = self._rng.random()
            edge = 0.0
            for kind in KINDS:
                edge += self.rates[kind]
                if roll < edge:
                    if kind == "5xx":
                        return self._rng.choice(("500", "503"))
                    return kind
            return None


def malformed_ips_body(context: str, strings: list[str] | None) -> bytes:
    """The doc example's body: second entry lacks its closing quote, then a literal '...'."""
    first, second = (list(strings or []) + ["104.80.104.128", "23.203.232.228"])[:2]
    return (
        "{\n"
        f'    "@odata.context": "{context}",\n'
        '    "value": [\n'
        "                {\n"
        f'                    "id": "{first}"\n'
        "                },\n"
        "                {\n"
        f'                    "id": "{second}\n'
        "                }\n"
        "                ...\n"
        "    ]\n"
        "}\n"
    ).encode()


def malformed_list_body(context: str, alerts: list[dict]) -> bytes:
    """The same two defects in an alert listing."""
    ids = [a["id"] for a in alerts[:2]] + ["da637984756812345678_-1234567890",
                                          "636688558380765161_2136280442"]
    return (
        "{\n"
        f'    "@odata.context": "{context}",\n'
        '    "value": [\n'
        f'        {{"id": "{ids[0]}", "severity": "Medium"}},\n'
        f'        {{"id": "{ids[1]}, "severity": "High"}}\n'
        "        ...\n"
        "    ]\n"
        "}\n"
    ).encode()
