"""The settle delay: an hourly run lists ``[H, H+1h)`` no earlier than ``H+1h+settle``.

Alerts become listable some minutes after their lastUpdateTime (docs: "Late alerts");
waiting ``settle`` (setting ``MDE_ALERT_IPS_SETTLE_SECONDS``, default 300) after the hour
closes lets most of them arrive before the hour is listed; the look-back catches the rest.

:class:`MdeSettleOperator` waits by deferring to the triggerer (``DateTimeTrigger``): the
wait holds no worker slot, and it runs in the default pool, never in ``mde_api``
(deferred tasks hold no pool slot either). When the moment has passed already (a
backfill, a late run, a settle of 0) it succeeds at once without deferring.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

from airflow.providers.standard.triggers.temporal import DateTimeTrigger
from airflow.sdk import BaseOperator

from mde_pipeline.airflow import settings
from mde_pipeline.common.timestamps import to_utc_datetime


def settle_moment(data_interval_end: datetime | str, settle: timedelta) -> datetime:
    return to_utc_datetime(data_interval_end) + settle


class MdeSettleOperator(BaseOperator):
    """Succeeds at ``data_interval_end + settle``; defers until then."""

    template_fields: Sequence[str] = ("data_interval_end",)
    ui_color = "#f4f4f4"

    def __init__(self, *, data_interval_end: Any = "{{ data_interval_end }}", settle: timedelta | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.data_interval_end = data_interval_end
        self.settle = settings.SETTLE if settle is None else settle

    def execute(self, context: Any) -> None:
        moment = settle_moment(self.data_interval_end, self.settle)
        if datetime.now(timezone.utc) >= moment:
            self.log.info("settle moment %s has passed: listing now", moment.isoformat())
            return
        self.log.info("waiting (deferred) until %s before listing", moment.isoformat())
        self.defer(trigger=DateTimeTrigger(moment=moment), method_name="execute_complete")

    def execute_complete(self, context: Any, event: Any = None) -> None:
        return None
