"""Let ``airflow dags test`` finish a DAG that has a Deadline Alert (Airflow 3.3.2 bug).

``DAG.test()`` (what ``airflow dags test`` runs) builds its scheduler DAG with an
in-memory serialize/deserialize round trip, so that DAG's ``deadline`` holds the
*encoded* alerts (dicts), not the ids of ``deadline_alert`` rows that the scheduler's
DAGs hold. When the run succeeds, ``DagRun.update_state()`` passes each entry to
``DeadlineAlert.get_by_id()`` (to decide whether to prune the run's deadlines), the
UUID column cannot bind a dict ("'dict' object has no attribute 'hex'"), and the command
exits 1 with the run left ``running`` in the metadata DB although every task succeeded.
Upstream: apache/airflow#73428, fix proposed in apache/airflow#73430 (same idea as here).

No declaration avoids it (any ``deadline=`` gets encoded the same way), so
:func:`allow_dag_test` wraps ``get_by_id``: an encoded alert is read as an unsaved
``DeadlineAlert`` row built from it (all the caller needs is its ``reference_class``);
an id goes to Airflow's own method unchanged, so the scheduler's path is untouched. It
patches only an Airflow that is already imported: a DAG file never imports Airflow's
core models itself (``airflow dags test`` and ``include/dag_runs.py`` have them
imported before they parse the DAG). Delete this module once Airflow ships the fix.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

_MODULE = "airflow.models.deadline_alert"
_MARK = "_mde_reads_encoded_alerts"


def alert_from_encoded(model: type, encoded: dict[str, Any]) -> Any:
    """An unsaved ``deadline_alert`` row with the fields of an encoded alert (as
    ``SerializedDagModel`` stores them: name, reference, interval, callback)."""
    data = encoded.get("__var", encoded)
    return model(
        name=data.get("name"),
        reference=data["reference"],
        interval=data["interval"],
        callback_def=data["callback"],
    )


def allow_dag_test() -> bool:
    """Wrap ``DeadlineAlert.get_by_id`` of the loaded Airflow (once); True if it is wrapped."""
    module = sys.modules.get(_MODULE)
    model = getattr(module, "DeadlineAlert", None)
    if model is None:
        return False
    original = model.get_by_id
    if getattr(original, _MARK, False):
        return True

    @functools.wraps(original)
    def get_by_id(deadline_alert_id, *args, **kwargs):
        if isinstance(deadline_alert_id, dict):
            return alert_from_encoded(model, deadline_alert_id)
        return original(deadline_alert_id, *args, **kwargs)

    setattr(get_by_id, _MARK, True)
    model.get_by_id = staticmethod(get_by_id)  # `original` is already bound to the class
    return True
