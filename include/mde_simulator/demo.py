"""Profile ``demo``: alerts with the shape of a real tenant (``--profile demo``).

The default profile (``flat``) gives every alert its own random addresses and device,
which is what the exactness tests want and what no tenant looks like. This one, for
`make run` and `make ui`, gives the lake something to show, deterministic per seed:

- a fleet of devices, a few of them busy, each with its own internal address, which
  every alert on that device names;
- shared services (internal DNS, domain controller, proxy, two Microsoft endpoints)
  named by many alerts on many devices;
- a long tail of public addresses, most seen once, some twice;
- IOC-like addresses (``IOC_ADDRESSES``), each in several High alerts on several devices;
- alerts that change over the hours (New -> InProgress -> Resolved with a
  classification), each change a new version at a later ``lastUpdateTime``; an alert
  exists only from its first version on, and a change happens when the simulator's clock
  passes it (``AlertStore.apply_due``);
- a few late alerts (listable ``LATE_MINUTES`` after their update, so their hour's own
  run misses them and the next hour's look-back finds them), one alert whose ``/ips``
  answers 500 forever (ground truth: ``ips_status`` ``error``, no IPs, as the pipeline
  records it), one alert with a poison field (``incidentId: 12.5``) and, on the last
  hour's alerts, a field no schema names yet (``newField``).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .alerts import (ANALYSTS, CATEGORIES, DETECTION_SOURCES, HOUR_TICKS, INVALID_IP_STRINGS,
                     MITRE, THREATS, TITLES, USERS, Alert, _v6_spellings)
from .timeutil import TICKS_PER_SECOND, format_ticks

MINUTE_TICKS = 60 * TICKS_PER_SECOND
LATE_MINUTES = 50.0  # an alert at minute >= 20 of hour H is missed at H+1h+5min, seen at H+2h+5min
LATE_ALERTS = 3
# Named in many alerts, whatever the device: (address, share of alerts naming it).
SHARED_SERVICES = [("10.20.0.53", 0.30), ("10.20.0.10", 0.20), ("10.20.1.8", 0.20),
                   ("fd00:20::53", 0.10), ("13.107.4.52", 0.15), ("52.113.194.132", 0.10)]
# IOC-like: each in several High alerts on several devices. 203.0.113.7 is the address
# docs/ANALYSTS.md looks up (a documentation address); the other one is public.
IOC_ADDRESSES = ["203.0.113.7", "45.137.21.9"]
SERVERS = [("srv-dc01", "10.20.0.10"), ("srv-file01", "10.20.0.25"), ("srv-sql01", "10.20.0.31"),
           ("srv-web01", "10.20.0.40")]
WORKSTATIONS = 20
TAIL_V4_FIRST_OCTETS = [20, 23, 40, 52, 77, 91, 104, 151, 185, 212]
TAIL_V6_PREFIXES = [0x2a010111, 0x20014860, 0x2a031b20]
IOC_TITLES = ["Communication with a known malicious IP address", "Possible Cobalt Strike C2 connection",
              "Connection to a custom network indicator"]


@dataclass(frozen=True)
class Device:
    machine_id: str
    dns_name: str
    ip: str
    rbac_group: str
    weight: float


def _fleet(rng) -> list[Device]:
    devices = [Device(f"{rng.getrandbits(160):040x}", f"{name}.contoso.local", ip, "Servers", 0.0)
               for name, ip in SERVERS]
    for number in range(WORKSTATIONS):
        ip = f"10.20.{8 + number // 10}.{rng.randrange(20, 250)}"
        group = "Finance" if number % 5 == 0 else "Workstations"
        devices.append(Device(f"{rng.getrandbits(160):040x}", f"wks-{number + 1:03d}.contoso.local", ip, group, 0.0))
    order = list(range(len(devices)))
    rng.shuffle(order)
    # Zipf-like: a few devices raise most alerts.
    return [Device(d.machine_id, d.dns_name, d.ip, d.rbac_group, 1.0 / (1 + order[i]))
            for i, d in enumerate(devices)]


def _tail_address(rng) -> ipaddress._BaseAddress:
    while True:
        if rng.random() < 0.75:
            address = ipaddress.IPv4Address((rng.choice(TAIL_V4_FIRST_OCTETS) << 24)
                                            | (rng.getrandbits(16) << 8) | rng.randrange(1, 255))
        else:
            address = ipaddress.IPv6Address((rng.choice(TAIL_V6_PREFIXES) << 96)
                                            | (rng.getrandbits(16) << 64) | rng.randrange(1, 65536))
        if address.is_global:
            return address


def _spelled(text: str, rng) -> str:
    address = ipaddress.ip_address(text)
    return _v6_spellings(address, rng) if address.version == 6 else str(address)


class DemoTenant:
    """Fills an AlertStore's pending schedule (``store.schedule``), its late alerts and
    its poison fields. Everything comes from the store's seeded RNG."""

    def __init__(self, store, count: int, burst_share: float, empty_rate: float, missing_rate: float):
        self.store = store
        self.rng = store._rng
        self.devices = _fleet(self.rng)
        self.tail: list[str] = []
        stamps = sorted(store._timestamps(count, burst_share))
        self.count = count
        kinds = []
        for _ in stamps:
            roll = self.rng.random()
            kinds.append("empty" if roll < empty_rate else "missing" if roll < empty_rate + missing_rate else "ok")
        ids = [store._new_id() for _ in stamps]
        self.build(list(zip(ids, stamps, kinds)))

    # ------------------------------------------------------------ roles
    def _usable(self, alert_id: str, kind: str) -> bool:
        """An alert whose IPs the lake will hold (not emptied, missing, nor vanishing)."""
        return kind == "ok" and not self.store._vanishes(alert_id)

    def build(self, plan: list[tuple[str, int, str]]) -> None:
        rng, store = self.rng, self.store
        usable = [i for i, (alert_id, _, kind) in enumerate(plan) if self._usable(alert_id, kind)]
        last_hour = store.end - HOUR_TICKS
        ioc_of: dict[int, str] = {}
        per_ioc = max(4, self.count // 15)
        for ioc in IOC_ADDRESSES:
            free = [i for i in usable if i not in ioc_of]
            for i in rng.sample(free, min(per_ioc, len(free))):
                ioc_of[i] = ioc
        free = [i for i in usable if i not in ioc_of]
        in_last_hour = [i for i in free if plan[i][1] >= last_hour]
        failing = rng.choice(in_last_hour or free) if free else None
        free = [i for i in free if i != failing]
        # Late: missed by their hour's own run and found by the next hour's look-back.
        late_candidates = [i for i in free if plan[i][1] < last_hour
                           and plan[i][1] % HOUR_TICKS >= 20 * MINUTE_TICKS]
        late = set(rng.sample(late_candidates, min(LATE_ALERTS, len(late_candidates))))
        poisoned = rng.choice([i for i in free if i not in late] or free) if free else None
        ioc_devices: dict[str, list[Device]] = {}
        for index, (alert_id, ticks, kind) in enumerate(plan):
            ioc = ioc_of.get(index)
            if ioc:  # the first two alerts of an IOC on two different devices
                seen = ioc_devices.setdefault(ioc, [])
                device = self._device(exclude=seen[0] if len(seen) == 1 else None)
                seen.append(device)
            else:
                device = self._device()
            alert = self._alert(alert_id, ticks, kind, device, ioc)
            if index == failing:
                alert.kind = "failing"
            store.schedule_alert(alert)
            if index in late:
                store.late_minutes[alert_id] = LATE_MINUTES
            elif index != failing:
                self._changes(alert, ticks)
            if index == poisoned:
                store.poison_fields.setdefault(alert_id, {})["incidentId"] = 12.5
            if ticks >= last_hour:
                store.poison_fields.setdefault(alert_id, {})["newField"] = {
                    "kind": "added by the service this hour", "source": "demo"}

    def _device(self, exclude: Device | None = None) -> Device:
        choices = [d for d in self.devices if d is not exclude]
        return self.rng.choices(choices, weights=[d.weight for d in choices])[0]

    # ------------------------------------------------------------ one alert
    def _ips(self, device: Device, ioc: str | None) -> list[str]:
        rng = self.rng
        chosen = [device.ip] if rng.random() < 0.85 else []
        chosen += [address for address, share in SHARED_SERVICES if rng.random() < share]
        for _ in range(rng.choice([0, 1, 1, 2, 3])):
            chosen.append(self._tail())
        if ioc:
            chosen.append(ioc)
        chosen = list(dict.fromkeys(chosen)) or [device.ip]
        served = [_spelled(text, rng) for text in chosen]
        if rng.random() < 0.1:  # the same address twice, maybe in another spelling
            served.append(_spelled(rng.choice(chosen), rng))
        rng.shuffle(served)
        return served

    def _tail(self) -> str:
        """A public address: mostly new, sometimes one seen before (counts of 1 and 2)."""
        if self.tail and self.rng.random() < 0.15:
            return self.rng.choice(self.tail)
        address = _tail_address(self.rng).compressed
        self.tail.append(address)
        return address

    def _alert(self, alert_id: str, last_update: int, kind: str, device: Device, ioc: str | None) -> Alert:
        rng = self.rng
        created = last_update - rng.randrange(0, 3 * HOUR_TICKS)
        first_event = created - rng.randrange(0, HOUR_TICKS)
        last_event = rng.randint(first_event, created)
        user = rng.choice(USERS + [None])
        if ioc:
            title, category, severity = rng.choice(IOC_TITLES), "CommandAndControl", "High"
            threat_family, threat_name = THREATS[3]
        else:
            title, category = rng.choice(TITLES), rng.choice(CATEGORIES)
            severity = rng.choice(["Informational", "Low", "Low", "Medium", "Medium", "High"])
            threat_family, threat_name = rng.choice(THREATS)
        fields = {
            "id": alert_id,
            "incidentId": 1000 + rng.randrange(1, max(2, self.count // 4)),
            "investigationId": rng.choice([None, rng.randrange(1, 99999)]),
            "assignedTo": None,
            "severity": severity,
            "status": "New",
            "classification": None,
            "determination": None,
            "investigationState": rng.choice(["Unsupported", "Running", "Queued"]),
            "detectionSource": rng.choice(DETECTION_SOURCES),
            "detectorId": f"{rng.randrange(16**8):08x}-{rng.randrange(16**4):04x}-"
                          f"{rng.randrange(16**4):04x}-{rng.randrange(16**4):04x}-"
                          f"{rng.randrange(16**12):012x}",
            "category": category,
            "threatFamilyName": threat_family,
            "threatName": threat_name,
            "title": title,
            "description": "Generated by mde-simulator (demo profile).",
            "alertCreationTime": format_ticks(created),
            "firstEventTime": format_ticks(first_event),
            "lastEventTime": format_ticks(last_event),
            "resolvedTime": None,
            "machineId": device.machine_id,
            "computerDnsName": device.dns_name,
            "rbacGroupName": device.rbac_group,
            "aadTenantId": self.store.tenant_id,
            "mitreTechniques": (["T1071.001"] if ioc else rng.sample(MITRE, rng.randint(0, 3))),
            "relatedUser": ({"userName": user[0], "domainName": user[1]} if user else None),
            "loggedOnUsers": ([{"accountName": user[0], "domainName": user[1]}] if user else []),
            "comments": [],
        }
        alert = Alert(id=alert_id, fields=fields, last_update=last_update, kind=kind)
        if kind == "ok":
            alert.base_ips = self._ips(device, ioc)
        alert.invalid_ips = rng.sample(INVALID_IP_STRINGS, rng.randint(1, 2))
        alert.fields["_evidence"] = self.store._evidence(alert, created)
        alert.fields["_ticks"] = {"alertCreationTime": created, "firstEventTime": first_event,
                                  "lastEventTime": last_event, "resolvedTime": None}
        return alert

    def _changes(self, alert: Alert, ticks: int) -> None:
        """45% of the alerts change later if ``end`` leaves time: InProgress, then
        Resolved, each a new version in the next hour or the one after (minute >= 10, so
        the earlier hour's run, 5 minutes after it ends, still lists the earlier version)."""
        rng = self.rng
        if rng.random() >= 0.45:
            return
        analyst = rng.choice(ANALYSTS)
        for status in ["InProgress", "Resolved"][: rng.choice([1, 2, 2])]:
            hour = ticks - ticks % HOUR_TICKS + HOUR_TICKS * rng.randint(1, 2)
            at = hour + rng.randrange(10 * MINUTE_TICKS, 55 * MINUTE_TICKS)
            if at >= self.store.end:
                return
            fields = {"status": status, "assignedTo": analyst}
            if status == "Resolved":
                classification, determination = rng.choice(
                    [("TruePositive", "Malware"), ("TruePositive", "MultiStagedAttack"),
                     ("FalsePositive", "Other"), ("InformationalExpectedActivity", "SecurityTesting")])
                fields.update(classification=classification, determination=determination,
                              resolvedTime=format_ticks(at))
            comment = {"comment": "Resolved" if status == "Resolved" else "Investigating",
                       "createdBy": analyst, "createdTime": format_ticks(at, 7)}
            new_ip = self._tail() if alert.kind == "ok" and rng.random() < 0.3 else None
            self.store.schedule_change(alert.id, at, fields, comment, new_ip)
            ticks = at
