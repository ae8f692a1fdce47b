"""Late visibility: a share of alerts becomes listable only some minutes after its
lastUpdateTime (Microsoft pushes alerts only once processing ends; no upper bound).

Which alerts are late is fixed by the seed and the alert id (so an alert updated later
is late again for its new version); whether it is visible depends on the simulator's
clock, real time unless a test sets ``now`` (POST /_sim/config {"now": "...Z"}), which
lets a test play hours that lie in the past. The ground truth is unchanged: a late
alert is part of it from the start. /ips and GET /alerts/{id} answer for late alerts
(only the listing hides them). A data profile can name late alerts itself (``late``:
alert id -> minutes; the demo profile does), beside the seeded share.
"""
from __future__ import annotations

import hashlib

from .timeutil import TICKS_PER_SECOND, format_ticks, now_ticks


class Lateness:
    def __init__(self, seed: int, share: float = 0.0, minutes: float = 0.0, now: int | None = None,
                 late: dict[str, float] | None = None):
        self.seed = seed
        self.share = share
        self.minutes = minutes
        self.now = now  # ticks; None = real time
        self.late = dict(late or {})

    def is_late(self, alert_id: str) -> bool:
        if alert_id in self.late:
            return True
        if self.share <= 0:
            return False
        digest = hashlib.sha256(f"{self.seed}:late:{alert_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.share

    def clock(self) -> int:
        return self.now if self.now is not None else now_ticks()

    def visible(self, alert_id: str, last_update: int) -> bool:
        if not self.is_late(alert_id):
            return True
        minutes = self.late.get(alert_id, self.minutes)
        return self.clock() >= last_update + int(minutes * 60 * TICKS_PER_SECOND)

    def settings(self) -> dict:
        return {"late_share": self.share, "late_minutes": self.minutes,
                "now": None if self.now is None else format_ticks(self.now)}
