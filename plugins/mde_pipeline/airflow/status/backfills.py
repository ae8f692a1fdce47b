"""Backfills in progress, from Airflow's metadata DB (the one the API server uses)."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

DONE_STATES = ("success",)
FAILED_STATES = ("failed",)


def active_backfills(dag_id: str) -> list[dict[str, Any]]:
    """Each backfill of ``dag_id`` not completed yet: hours done, failed, left.

    ``intervals_left`` lists the data interval starts (ISO) of the runs still to finish
    (queued or running), for the IP-call arithmetic. Planned hours that got no run
    (e.g. a run for that hour existed already) count as ``skipped``.
    """
    from sqlalchemy import func, select
    from sqlalchemy.engine import make_url

    from airflow.configuration import conf
    from airflow.models.backfill import Backfill, BackfillDagRun
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    url = make_url(conf.get("database", "sql_alchemy_conn"))
    if url.get_backend_name() == "sqlite" and url.database and not os.path.exists(url.database):
        raise FileNotFoundError(f"no metadata DB at {url.database} (run `make run` or `make ui` first)")
    result = []
    with create_session() as session:
        backfills = session.scalars(
            select(Backfill).where(Backfill.dag_id == dag_id, Backfill.completed_at.is_(None)).order_by(Backfill.id)
        ).all()
        for backfill in backfills:
            runs = session.execute(
                select(DagRun.state, DagRun.data_interval_start).where(DagRun.backfill_id == backfill.id)
            ).all()
            skipped = session.scalar(
                select(func.count(BackfillDagRun.id)).where(
                    BackfillDagRun.backfill_id == backfill.id, BackfillDagRun.dag_run_id.is_(None)
                )
            )
            states = Counter(str(getattr(state, "value", state)) for state, _ in runs)
            left = sorted(
                start.isoformat()
                for state, start in runs
                if str(getattr(state, "value", state)) not in DONE_STATES + FAILED_STATES and start is not None
            )
            result.append(
                {
                    "id": backfill.id,
                    "from_date": backfill.from_date.isoformat(),
                    "to_date": backfill.to_date.isoformat(),
                    "is_paused": bool(backfill.is_paused),
                    "created_at": backfill.created_at.isoformat(),
                    "hours_total": len(runs),
                    "hours_done": sum(states[s] for s in DONE_STATES),
                    "hours_failed": sum(states[s] for s in FAILED_STATES),
                    "hours_left": len(left),
                    "hours_running": states.get("running", 0),
                    "hours_skipped": int(skipped or 0),
                    "intervals_left": left,
                }
            )
    return result
