"""Seeded alert data and the ground truth derived from it.

Everything a client can observe (lastUpdateTime, the strings /ips serves, 404s) lives
here, and ground_truth() derives its answer from the very same strings with `ipaddress`,
so the file tests compare against cannot drift from what was served.
"""
from __future__ import annotations

import bisect
import functools
import hashlib
import ipaddress
import json
import os
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .timeutil import TICKS_PER_SECOND, format_ticks, parse_iso

HOUR_TICKS = 3600 * TICKS_PER_SECOND

SEVERITIES = ["UnSpecified", "Informational", "Low", "Medium", "High"]
STATUSES = ["New", "InProgress", "Resolved", "Unknown"]
CATEGORIES = ["Malware", "SuspiciousActivity", "CommandAndControl", "Exploit",
              "CredentialAccess", "LateralMovement", "InitialAccess", "Persistence",
              "Execution", "Discovery", "Exfiltration", "Ransomware"]
DETECTION_SOURCES = ["WindowsDefenderAv", "WindowsDefenderAtp", "CustomDetection",
                     "AutomatedInvestigation", "MTP", "SmartScreen"]
TITLES = ["Suspicious PowerShell command line", "Connection to a custom network indicator",
          "Possible Cobalt Strike C2 connection", "Suspicious process injection observed",
          "Anomalous account lookups", "Emotet malware was detected",
          "Suspicious connection blocked by network protection",
          "Multi-stage incident involving Initial access",
          "An active 'Mimikatz' credential theft tool was detected",
          "Communication with a known malicious IP address"]
THREATS = [(None, None), ("Emotet", "TrojanDownloader:O97M/Emotet.CSK!MTB"),
           ("Mimikatz", "HackTool:Win32/Mimikatz.D"), ("CobaltStrike", "Backdoor:Win64/CobaltStrike.NP!dha"),
           (None, None), (None, None)]
CLASSIFICATIONS = [(None, None), ("TruePositive", "Malware"), ("TruePositive", "MultiStagedAttack"),
                   ("FalsePositive", "Other"), ("InformationalExpectedActivity", "SecurityTesting")]
MITRE = ["T1059.001", "T1071.001", "T1055", "T1003.001", "T1087.002", "T1566.001", "T1105",
         "T1547.001", "T1021.002", "T1041", "T1486", "T1204.002", "T1027"]
RBAC_GROUPS = ["Servers", "Workstations", "UnassignedGroup", "Finance", None]
USERS = [("alice", "CONTOSO"), ("bob", "CONTOSO"), ("svc_backup", "CONTOSO"),
         ("administrator", "FABRIKAM"), ("jdoe", "NORTHWIND")]
ANALYSTS = ["secop@contoso.com", "analyst2@contoso.com", "Automation"]
# Strings ipaddress rejects without doubt (no whitespace or leading-zero v4 that a
# lenient parser might accept): /ips serves them only when invalid_ip_rate says so.
INVALID_IP_STRINGS = ["999.12.3.4", "10.0.0", "2001:db8::zz12", "not-an-ip", "1.2.3.4.5",
                      "fe80::1::2", "256.256.256.256", "12.34.56.78:443", "-", "N/A"]


def _unit(seed: int, purpose: str, alert_id: str) -> float:
    """A per-alert uniform in [0, 1) that does not depend on call order."""
    digest = hashlib.sha256(f"{seed}:{purpose}:{alert_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@functools.lru_cache(maxsize=65536)
def canonical_ip(text: str) -> str | None:
    """Canonical spelling (ipaddress compressed, lower case); None if not an IP."""
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        return None


def _v6_spellings(address: ipaddress.IPv6Address, rng: random.Random) -> str:
    groups = address.exploded.split(":")
    style = rng.randrange(5)
    if style == 0:
        return address.compressed
    if style == 1:
        return address.compressed.upper()
    if style == 2:
        return address.exploded
    if style == 3:  # leading zeros kept in some groups, run of zeros compressed
        text = ":".join(g if rng.random() < 0.5 else g.lstrip("0") or "0" for g in groups)
        return text.replace(":0:0:0:", "::", 1) if ":0:0:0:" in text else text
    return ":".join(g.lstrip("0") or "0" for g in groups).upper()


@dataclass
class Alert:
    id: str
    fields: dict
    last_update: int
    base_ips: list = field(default_factory=list)       # valid strings as served, dups kept
    invalid_ips: list = field(default_factory=list)    # served only when the invalid flag is on
    kind: str = "ok"                                   # ok | empty | missing (no IPs, 404)
    #                                                    | failing (/ips 500 forever: 'error')
    versions: list = field(default_factory=list)       # [(ticks, [canonical ips])]


class AlertStore:
    def __init__(self, *, seed: int, count: int, start: int, end: int, tenant_id: str,
                 burst_share: float, empty_ips_rate: float, missing_ips_rate: float,
                 invalid_ip_rate: float, vanish_rate: float, profile: str = "flat"):
        if end <= start:
            raise ValueError("end must be after start")
        self.seed = seed
        self.start, self.end = start, end
        self.tenant_id = tenant_id
        self.invalid_ip_rate = invalid_ip_rate
        self.vanish_rate = vanish_rate
        self._lock = self.lock = threading.RLock()
        self._rng = random.Random(seed)
        self._advance_rng = random.Random(seed * 7919 + 17)
        self.version = 0
        self._alerts: dict[str, Alert] = {}
        self._index: list[tuple[int, str]] = []
        # Alerts and changes that happen when the clock passes them (apply_due), in
        # (ticks, order) order; the flat profile has none: all its alerts exist at once.
        self._pending: list[tuple[int, int, str, object]] = []
        self._scheduled: dict[str, Alert] = {}
        self.late_minutes: dict[str, float] = {}   # alert id -> minutes it is listable late
        self.poison_fields: dict[str, dict] = {}   # alert id -> fields served wrong
        if profile == "demo":
            from .demo import DemoTenant

            DemoTenant(self, count, burst_share, empty_ips_rate, missing_ips_rate)
            self._pending.sort(key=lambda entry: entry[:2])
        elif profile == "flat":
            self._generate(count, burst_share, empty_ips_rate, missing_ips_rate)
        else:
            raise ValueError(f"unknown profile {profile!r}")

    # ---------------------------------------------------------------- generation
    def _new_id(self) -> str:
        rng = self._rng
        while True:
            left = f"{rng.randrange(10**18):018d}"
            right = rng.randint(-2**31, 2**31 - 1)
            alert_id = (f"da{left}_{right}" if rng.random() < 0.7
                        else f"63{left[:16]}_{abs(right)}")
            if alert_id not in self._alerts:
                return alert_id

    def _timestamps(self, count: int, burst_share: float) -> list[int]:
        rng = self._rng
        span = self.end - self.start
        stamps: list[int] = []
        in_bursts = int(count * burst_share)
        while len(stamps) < in_bursts:
            size = min(rng.randint(2, 25), in_bursts - len(stamps))
            if rng.random() < 0.25:
                # A burst exactly on an hour boundary: the edge of an interval.
                first_hour = -(-self.start // HOUR_TICKS) * HOUR_TICKS
                hours = max(1, (self.end - first_hour) // HOUR_TICKS)
                ticks = first_hour + rng.randrange(hours) * HOUR_TICKS
                if not self.start <= ticks < self.end:
                    ticks = self.start + rng.randrange(span)
            else:
                ticks = self.start + rng.randrange(span)
            stamps.extend([ticks] * size)
        while len(stamps) < count:
            ticks = self.start + rng.randrange(span)
            if rng.random() < 0.05:  # whole seconds: filter literals without fraction
                ticks = max(self.start, ticks - ticks % TICKS_PER_SECOND)
            stamps.append(ticks)
        rng.shuffle(stamps)
        return stamps

    def _new_ip(self) -> ipaddress._BaseAddress:
        rng = self._rng
        if rng.random() < 0.65:
            first = rng.choice([10, 20, 23, 40, 52, 104, 172, 185, 192, 203])
            return ipaddress.IPv4Address(
                (first << 24) | (rng.getrandbits(16) << 8) | rng.randrange(1, 255))
        prefix = rng.choice([0x20010db8, 0x20014860, 0x2a010111, 0xfd001234])
        middle = 0
        for _ in range(4):  # some all-zero groups, so '::' compression happens
            middle = (middle << 16) | (0 if rng.random() < 0.5 else rng.getrandbits(16))
        tail = (rng.getrandbits(16) << 16) | rng.randrange(1, 65536)
        return ipaddress.IPv6Address((prefix << 96) | (middle << 32) | tail)

    def _ip_strings(self) -> list[str]:
        rng = self._rng
        served = []
        for _ in range(rng.randint(1, 6)):
            address = self._new_ip()
            if isinstance(address, ipaddress.IPv6Address):
                served.append(_v6_spellings(address, rng))
            else:
                served.append(str(address))
        if rng.random() < 0.25:  # the same address twice: same or another spelling
            again = ipaddress.ip_address(rng.choice(served))
            if isinstance(again, ipaddress.IPv6Address):
                served.append(_v6_spellings(again, rng))
            else:
                served.append(str(again))
            rng.shuffle(served)
        return served

    def _evidence(self, alert: Alert, created: int) -> list[dict]:
        rng = self._rng
        empty = dict.fromkeys([
            "sha1", "sha256", "fileName", "filePath", "processId", "processCommandLine",
            "processCreationTime", "parentProcessId", "parentProcessCreationTime",
            "parentProcessFileName", "parentProcessFilePath", "ipAddress", "url",
            "registryKey", "registryHive", "registryValueType", "registryValue",
            "accountName", "domainName", "userSid", "aadUserId", "userPrincipalName",
            "detectionStatus"])
        evidence = []
        for ip in alert.base_ips[: rng.randint(0, len(alert.base_ips))]:
            evidence.append({**empty, "entityType": "Ip", "ipAddress": ip,
                             "evidenceCreationTime": format_ticks(created)})
        if rng.random() < 0.6:
            evidence.append({**empty, "entityType": "File", "fileName": "payload.exe",
                             "filePath": "C:\\Users\\Public\\Downloads",
                             "sha1": f"{rng.getrandbits(160):040x}",
                             "detectionStatus": rng.choice(["Detected", "Blocked", "Prevented"]),
                             "evidenceCreationTime": format_ticks(created)})
        user = alert.fields.get("relatedUser")
        if user:
            evidence.append({**empty, "entityType": "User", "accountName": user["userName"],
                             "domainName": user["domainName"],
                             "userSid": "S-1-5-21-1111111111-2222222222-3333333333-1001",
                             "evidenceCreationTime": format_ticks(created)})
        return evidence

    def _generate(self, count: int, burst_share: float, empty_rate: float,
                  missing_rate: float) -> None:
        rng = self._rng
        incidents = max(1, count // 3)
        for last_update in self._timestamps(count, burst_share):
            alert_id = self._new_id()
            created = last_update - rng.randrange(0, 6 * HOUR_TICKS)
            first_event = created - rng.randrange(0, 2 * HOUR_TICKS)
            last_event = rng.randint(first_event, created)
            status = rng.choice(STATUSES)
            threat_family, threat_name = rng.choice(THREATS)
            classification, determination = rng.choice(CLASSIFICATIONS)
            user = rng.choice(USERS + [None])
            machine = f"{rng.getrandbits(160):040x}"
            comments = [
                {"comment": rng.choice(["Investigating", "Escalated to IR", "Known scanner"]),
                 "createdBy": rng.choice(ANALYSTS),
                 "createdTime": format_ticks(rng.randint(created, last_update), rng.choice([3, 7]))}
                for _ in range(rng.choice([0, 0, 1, 2]))
            ]
            fields = {
                "id": alert_id,
                "incidentId": rng.randrange(1, incidents + 1) + 1000,
                "investigationId": rng.choice([None, rng.randrange(1, 99999)]),
                "assignedTo": rng.choice([None, None] + ANALYSTS),
                "severity": rng.choice(SEVERITIES[1:] + ["Medium", "High"]),
                "status": status,
                "classification": classification,
                "determination": determination,
                "investigationState": rng.choice(["Unsupported", "Running", "Benign", "Queued"]),
                "detectionSource": rng.choice(DETECTION_SOURCES),
                "detectorId": f"{rng.randrange(16**8):08x}-{rng.randrange(16**4):04x}-"
                              f"{rng.randrange(16**4):04x}-{rng.randrange(16**4):04x}-"
                              f"{rng.randrange(16**12):012x}",
                "category": rng.choice(CATEGORIES),
                "threatFamilyName": threat_family,
                "threatName": threat_name,
                "title": rng.choice(TITLES),
                "description": "Generated by mde-simulator. " + rng.choice(
                    ["A process made a suspicious network connection.",
                     "An attacker may be moving laterally.",
                     "Credential theft tooling was observed on the device."]),
                "alertCreationTime": format_ticks(created),
                "firstEventTime": format_ticks(first_event),
                "lastEventTime": format_ticks(last_event),
                "resolvedTime": (format_ticks(rng.randint(created, last_update))
                                 if status == "Resolved" else None),
                "machineId": machine,
                "computerDnsName": f"host-{rng.randrange(1000):03d}.contoso.local",
                "rbacGroupName": rng.choice(RBAC_GROUPS),
                "aadTenantId": self.tenant_id,
                "mitreTechniques": rng.sample(MITRE, rng.randint(0, 3)),
                "relatedUser": ({"userName": user[0], "domainName": user[1]} if user else None),
                "loggedOnUsers": ([{"accountName": user[0], "domainName": user[1]}] if user else []),
                "comments": comments,
            }
            alert = Alert(id=alert_id, fields=fields, last_update=last_update)
            roll = rng.random()
            if roll < empty_rate:
                alert.kind = "empty"
            elif roll < empty_rate + missing_rate:
                alert.kind = "missing"
            else:
                alert.kind = "ok"
                alert.base_ips = self._ip_strings()
            alert.invalid_ips = rng.sample(INVALID_IP_STRINGS, rng.randint(1, 2))
            alert.fields["_evidence"] = self._evidence(alert, created)
            # Datetimes as ticks for $filter / $orderby (the strings are what is served).
            alert.fields["_ticks"] = {
                "alertCreationTime": created, "firstEventTime": first_event,
                "lastEventTime": last_event,
                "resolvedTime": parse_iso(fields["resolvedTime"]) if fields["resolvedTime"] else None}
            alert.versions.append((last_update, self._canonical_set(alert.base_ips)))
            self._alerts[alert_id] = alert
            self._index.append((last_update, alert_id))
        self._index.sort()

    @staticmethod
    def _canonical_set(strings) -> list[str]:
        return sorted({c for c in map(canonical_ip, strings) if c is not None})

    # ---------------------------------------------------------------- observation
    def __len__(self) -> int:
        return len(self._alerts)

    def vanished(self, alert: Alert) -> bool:
        return self._vanishes(alert.id)

    def _vanishes(self, alert_id: str) -> bool:
        return _unit(self.seed, "vanish", alert_id) < self.vanish_rate

    def serves_invalid(self, alert: Alert) -> bool:
        return alert.kind == "ok" and _unit(self.seed, "invalid", alert.id) < self.invalid_ip_rate

    def ips_status(self, alert: Alert) -> str:
        if alert.kind == "missing" or self.vanished(alert):
            return "not_found"
        if alert.kind == "failing":
            return "error"
        return "empty" if alert.kind == "empty" else "ok"

    def served_ips(self, alert_id: str):
        """(status, strings) as /ips serves them; strings is None for not_found and
        error (a 500)."""
        with self._lock:
            alert = self._alerts.get(alert_id)
            if alert is None:
                return "not_found", None
            status = self.ips_status(alert)
            if status in ("not_found", "error"):
                return status, None
            strings = list(alert.base_ips)
            if self.serves_invalid(alert):
                # Interleave deterministically so invalid strings are not always last.
                for offset, bad in enumerate(alert.invalid_ips):
                    strings.insert((offset * 2 + 1) % (len(strings) + 1), bad)
            return status, strings

    def get(self, alert_id: str) -> Alert | None:
        return self._alerts.get(alert_id)

    def snapshot(self) -> list[Alert]:
        """Alerts in (lastUpdateTime, id) order."""
        with self._lock:
            return [self._alerts[alert_id] for _, alert_id in self._index]

    def range_by_update(self, low: int | None, low_inclusive: bool,
                        high: int | None, high_inclusive: bool) -> list[Alert]:
        """Alerts with lastUpdateTime inside the bounds, in (lastUpdateTime, id) order."""
        with self._lock:
            index = self._index
            lo = 0
            if low is not None:
                lo = (bisect.bisect_left(index, (low, "")) if low_inclusive
                      else bisect.bisect_right(index, (low, "\U0010ffff")))
            hi = len(index)
            if high is not None:
                hi = (bisect.bisect_right(index, (high, "\U0010ffff")) if high_inclusive
                      else bisect.bisect_left(index, (high, "")))
            return [self._alerts[alert_id] for _, alert_id in index[lo:hi]]

    def to_json(self, alert: Alert, expand_evidence: bool) -> dict:
        body = {k: v for k, v in alert.fields.items() if not k.startswith("_")}
        body["lastUpdateTime"] = format_ticks(alert.last_update)
        if expand_evidence:
            body["evidence"] = alert.fields["_evidence"]
        return body

    # ---------------------------------------------------------------- changes
    def set_rates(self, *, vanish_rate=None, invalid_ip_rate=None) -> None:
        with self._lock:
            if vanish_rate is not None:
                self.vanish_rate = vanish_rate
            if invalid_ip_rate is not None:
                self.invalid_ip_rate = invalid_ip_rate
            self.version += 1

    def advance(self, *, ids=None, count=None, to_ticks: int, add_ip=False,
                candidates=None) -> list[dict]:
        """Move alerts' lastUpdateTime forward to `to_ticks` (at least one tick later).

        ids: exactly these alerts; else `count` alerts picked by the seeded advance RNG
        from `candidates` (default: all alerts). add_ip: each gets one new address.
        """
        with self._lock:
            if ids is not None:
                unknown = [i for i in ids if i not in self._alerts]
                if unknown:
                    raise KeyError(unknown)
                chosen = [self._alerts[i] for i in ids]
            else:
                pool = sorted(candidates if candidates is not None else self._alerts)
                chosen = [self._alerts[i] for i in
                          self._advance_rng.sample(pool, min(count or 0, len(pool)))]
            changes = []
            for alert in chosen:
                before = alert.last_update
                after = max(to_ticks, before + 1)
                self._move(alert, after)
                if add_ip:
                    address = self._new_ip()
                    alert.base_ips.append(address.compressed.upper() if address.version == 6
                                          else str(address))
                    if alert.kind in ("empty", "missing"):
                        alert.kind = "ok"
                if alert.fields["status"] == "New":
                    alert.fields["status"] = "InProgress"
                alert.versions.append((after, self._version_ips(alert)))
                changes.append({"id": alert.id, "from": format_ticks(before),
                                "to": format_ticks(after)})
            if changes:
                self.version += 1
            return changes

    def _move(self, alert: Alert, after: int) -> None:
        position = bisect.bisect_left(self._index, (alert.last_update, alert.id))
        del self._index[position]
        bisect.insort(self._index, (after, alert.id))
        alert.last_update = after

    def _version_ips(self, alert: Alert) -> list[str]:
        """What the lake holds for a version: no IPs when /ips fails forever."""
        return [] if alert.kind == "failing" else self._canonical_set(alert.base_ips)

    # ---------------------------------------------------------------- the clock
    def schedule_alert(self, alert: Alert) -> None:
        """``alert`` comes into being when the clock reaches its lastUpdateTime."""
        self._scheduled[alert.id] = alert
        self._pending.append((alert.last_update, len(self._pending), alert.id, None))

    def schedule_change(self, alert_id: str, ticks: int, fields: dict, comment: dict | None = None,
                        new_ip: str | None = None) -> None:
        """At ``ticks`` the alert gets ``fields`` (and ``comment``, ``new_ip``): a new version."""
        self._pending.append((ticks, len(self._pending), alert_id,
                              {"fields": fields, "comment": comment, "new_ip": new_ip}))

    def pending(self) -> int:
        return len(self._pending)

    def apply_due(self, clock: int) -> int:
        """Create the alerts and apply the changes whose time is <= ``clock``; how many."""
        with self._lock:
            due = 0
            while due < len(self._pending) and self._pending[due][0] <= clock:
                ticks, _, alert_id, change = self._pending[due]
                due += 1
                if change is None:
                    alert = self._scheduled.pop(alert_id)
                    alert.versions.append((ticks, self._version_ips(alert)))
                    self._alerts[alert_id] = alert
                    bisect.insort(self._index, (ticks, alert_id))
                    continue
                alert = self._alerts[alert_id]
                self._move(alert, max(ticks, alert.last_update + 1))
                alert.fields.update(change["fields"])
                if "resolvedTime" in change["fields"]:
                    alert.fields["_ticks"]["resolvedTime"] = parse_iso(change["fields"]["resolvedTime"])
                if change["comment"]:
                    alert.fields["comments"] = [*alert.fields["comments"], change["comment"]]
                if change["new_ip"]:
                    alert.base_ips.append(change["new_ip"])
                alert.versions.append((alert.last_update, self._version_ips(alert)))
            if due:
                del self._pending[:due]
                self.version += 1
            return due

    # ---------------------------------------------------------------- ground truth
    def ground_truth(self) -> dict:
        with self._lock:
            alerts = {}
            for alert in self.snapshot():
                status, strings = self.served_ips(alert.id)
                served = strings or []
                alerts[alert.id] = {
                    "lastUpdateTime": format_ticks(alert.last_update),
                    "ips": self._canonical_set(served),
                    "ips_status": status,
                    "invalid_ips": [s for s in served if canonical_ip(s) is None],
                    "served_ips": served,
                    "vanished": self.vanished(alert),
                    "versions": [{"lastUpdateTime": format_ticks(t), "ips": ips}
                                 for t, ips in alert.versions],
                }
                if alert.id in self.late_minutes:
                    alerts[alert.id]["late_minutes"] = self.late_minutes[alert.id]
            return {"tenant_id": self.tenant_id, "seed": self.seed, "version": self.version,
                    "start": format_ticks(self.start), "end": format_ticks(self.end),
                    "alerts": alerts}

    def write_ground_truth(self, path: Path) -> None:
        with self._lock:
            data = json.dumps(self.ground_truth(), separators=(",", ":"), sort_keys=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(data)
            os.replace(tmp, path)
