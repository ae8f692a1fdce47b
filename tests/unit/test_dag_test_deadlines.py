"""The workaround that lets `airflow dags test` finish a DAG with a Deadline Alert
(mde_pipeline.airflow.dag_test_deadlines; the CLI itself: tests/integration/test_dag_end_to_end.py)."""

from __future__ import annotations

import sys
import types
from datetime import timedelta

import pytest
from airflow.models.deadline_alert import DeadlineAlert as DeadlineAlertModel
from airflow.sdk import DAG
from airflow.serialization.definitions.deadline import SerializedReferenceModels
from airflow.serialization.serialized_objects import DagSerialization

from mde_pipeline.airflow import dag_test_deadlines, freshness


def encoded_alerts_of_a_test_run() -> list:
    """What `DAG.test()`'s scheduler DAG holds in ``deadline``: encoded alerts, no ids."""
    with DAG("freshness_round_trip", schedule=None, deadline=freshness.freshness_deadline()) as dag:
        pass
    return DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag)).deadline


def test_an_encoded_alert_reads_as_a_dagrun_reference_row(monkeypatch):
    # The stock 60 minutes whatever this process's environment, and Airflow left unpatched.
    monkeypatch.setattr(freshness, "DEADLINE", timedelta(minutes=60))
    monkeypatch.setattr(freshness, "allow_dag_test", lambda: True)
    (encoded,) = encoded_alerts_of_a_test_run()
    assert isinstance(encoded, dict)  # the 3.3.2 shape the workaround exists for
    alert = dag_test_deadlines.alert_from_encoded(DeadlineAlertModel, encoded)
    # What DagRun.update_state() asks of it before pruning the run's deadlines.
    assert alert.reference_class in SerializedReferenceModels.TYPES.DAGRUN
    assert alert.name == "mde_hour_committed"
    assert alert.interval["__data__"] == timedelta(minutes=60).total_seconds()


class FakeAlertModel:
    """Stands in for Airflow's model: the test never patches the real class."""

    looked_up: list = []

    def __init__(self, **fields):
        self.fields = fields

    @classmethod
    def get_by_id(cls, deadline_alert_id, *, session=None):
        cls.looked_up.append(deadline_alert_id)
        return ("row", deadline_alert_id)


@pytest.fixture
def fake_airflow(monkeypatch):
    FakeAlertModel.get_by_id = classmethod(FakeAlertModel.get_by_id.__func__)  # unwrapped each test
    FakeAlertModel.looked_up = []
    monkeypatch.setitem(sys.modules, "airflow.models.deadline_alert", types.SimpleNamespace(DeadlineAlert=FakeAlertModel))
    return FakeAlertModel


def test_ids_still_go_to_airflow_and_encoded_alerts_are_read_in_place(fake_airflow):
    assert dag_test_deadlines.allow_dag_test() is True
    assert dag_test_deadlines.allow_dag_test() is True  # once: no wrapper around the wrapper
    assert fake_airflow.get_by_id("0192-id", session="s") == ("row", "0192-id")
    encoded = {"name": "n", "reference": {"reference_type": "DagRunQueuedAtDeadline"}, "interval": 60, "callback": {}}
    row = fake_airflow.get_by_id(encoded, session="s")
    assert isinstance(row, FakeAlertModel) and row.fields["reference"] == encoded["reference"]
    assert fake_airflow.looked_up == ["0192-id"]  # the encoded alert never reached the DB lookup


def test_nothing_is_patched_when_airflow_core_is_not_loaded(monkeypatch):
    monkeypatch.delitem(sys.modules, "airflow.models.deadline_alert", raising=False)
    assert dag_test_deadlines.allow_dag_test() is False
