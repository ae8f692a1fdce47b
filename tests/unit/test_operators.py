"""The operators' own logic: per-batch IP fetch results, failure policy, templating and
the pool of mapped tasks (real Airflow DAG objects and serialization; the calls to the
API itself are covered against the simulator in tests/integration/test_fetch_simulator.py)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pendulum
import pytest
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowFailException
from airflow.serialization.serialized_objects import DagSerialization

from mde_pipeline.api.listing import AlertListing, ListingStats
from mde_pipeline.common.timestamps import to_ticks
from mde_pipeline.api.errors import MdeConfigurationError
from mde_pipeline.api.errors import (
    InvalidAlertIdError,
    MdeAuthenticationError,
    MdeBadRequestError,
    MdeMalformedResponseError,
    MdePermissionError,
    MdeServerError,
    MdeThrottledError,
    MdeTooManyFailedAlertsError,
)
from mde_pipeline.airflow.operators import (
    MdeFetchAlertIpsOperator,
    MdeListAlertsOperator,
    _fail_fast_on_configuration_errors,
    is_backfill,
)
from mde_pipeline.airflow.settings import MDE_POOL
from mde_pipeline.api.fetch import fetch_batch_ips


@dataclass
class FakeStats:
    calls: int = 0
    throttled: int = 0
    retries: int = 0
    wait_seconds: float = 0.0


class FakeIpsClient:
    """Serves canned /ips answers; counts calls like the real client's stats."""

    def __init__(self, answers: dict):
        self.answers = answers
        self.stats = FakeStats(calls=5, wait_seconds=1.5)  # earlier calls of the same client
        self.asked = []

    def get_alert_ips(self, alert_id):
        self.asked.append(alert_id)
        self.stats.calls += 1
        if alert_id == "slow":
            self.stats.throttled += 1
            self.stats.wait_seconds += 30
        answer = self.answers[alert_id]
        if isinstance(answer, Exception):
            raise answer
        return answer


def batch_of(*alert_ids):
    return {
        "batch_index": 2,
        "batch_count": 5,
        "alerts": [
            {"alert_id": a, "last_update_time": f"2024-03-10T13:00:0{i}.1234567Z"} for i, a in enumerate(alert_ids)
        ],
    }


class FakeClock:
    def __init__(self):
        self.now = datetime(2024, 3, 10, 15, 0, tzinfo=timezone.utc)

    def __call__(self):
        self.now += timedelta(seconds=1)
        return self.now


def test_fetch_results_per_status(caplog):
    client = FakeIpsClient(
        {
            "ok": ["2001:DB8::0001", "10.0.0.1", "2001:db8::1", "bogus\nline", "10.0.0.1 "],
            "empty": [],
            "gone": None,
            "slow": ["not-an-ip"],
        }
    )
    caplog.set_level(logging.INFO)
    results = fetch_batch_ips(client, batch_of("ok", "empty", "gone", "slow"), clock=FakeClock(), progress_every=2)

    assert client.asked == ["ok", "empty", "gone", "slow"]  # one call per alert, in order
    assert json.loads(json.dumps(results)) == results
    assert results == [
        {
            "alert_id": "ok",
            "last_update_time": "2024-03-10T13:00:00.1234567Z",
            "status": "ok",
            "ips": [["10.0.0.1", 4], ["2001:db8::1", 6]],
            "invalid_ip_values": ["bogus\nline"],
            "fetched_at": "2024-03-10T15:00:01+00:00",
        },
        {
            "alert_id": "empty",
            "last_update_time": "2024-03-10T13:00:01.1234567Z",
            "status": "empty",
            "ips": [],
            "invalid_ip_values": [],
            "fetched_at": "2024-03-10T15:00:02+00:00",
        },
        {
            "alert_id": "gone",
            "last_update_time": "2024-03-10T13:00:02.1234567Z",
            "status": "not_found",
            "ips": [],
            "invalid_ip_values": [],
            "fetched_at": "2024-03-10T15:00:03+00:00",
        },
        {
            "alert_id": "slow",
            "last_update_time": "2024-03-10T13:00:03.1234567Z",
            "status": "ok",  # the service answered with values, none of them an IP
            "ips": [],
            "invalid_ip_values": ["not-an-ip"],
            "fetched_at": "2024-03-10T15:00:04+00:00",
        },
    ]

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "alert 'ok': 'bogus\\nline' is not an IP address (not an IPv4 or IPv6 address); kept out of the ip column",
        "alert 'slow': 'not-an-ip' is not an IP address (not an IPv4 or IPv6 address); kept out of the ip column",
    ]
    progress = [r.getMessage() for r in caplog.records if "alerts fetched" in r.getMessage()]
    assert len(progress) == 2
    assert progress[0].startswith("batch 2/5: 2/4 alerts fetched; 2 calls, 0 throttled (429), 0 retries, 0.0s waiting")
    assert progress[1].startswith("batch 2/5: 4/4 alerts fetched; 4 calls, 1 throttled (429), 0 retries, 30.0s waiting")


@pytest.mark.parametrize(
    "error",
    [
        MdeAuthenticationError("API refused the token", status=401, target="corr-1"),
        MdeAuthenticationError("could not get an access token: AADSTS7000215 invalid secret", code="AADSTS7000215"),
        MdeConfigurationError("connection 'mde_default': extra tenant_id is required"),
        MdePermissionError("missing Ip.Read.All", status=403, permission="Ip.Read.All"),
        MdeBadRequestError("invalid $filter", status=400),
        InvalidAlertIdError("refusing alert id '../x'"),
    ],
)
def test_configuration_errors_fail_without_retry(error):
    def call():
        raise error

    with pytest.raises(AirflowFailException, match="not retried") as caught:
        _fail_fast_on_configuration_errors(call)
    assert caught.value.__cause__ is error
    assert str(error) in str(caught.value)


@pytest.mark.parametrize(
    "error",
    [
        MdeServerError("503", status=503),
        MdeThrottledError("throttled", status=429, retry_after=3600),
        MdeMalformedResponseError("not JSON"),
        MdeAuthenticationError("could not get an access token: connection refused"),  # no answer: may pass
    ],
)
def test_transient_errors_propagate_for_airflow_retries(error):
    def call():
        raise error

    with pytest.raises(type(error)):
        _fail_fast_on_configuration_errors(call)


def test_templated_fields_render_from_the_run_context():
    with DAG("render_probe", schedule=None, start_date=pendulum.datetime(2024, 1, 1)):
        lister = MdeListAlertsOperator(
            task_id="list", mde_conn_id="{{ params.conn }}", batch_size="{{ params.size }}", params={"conn": "mde_other", "size": 7}
        )
        fetch = MdeFetchAlertIpsOperator(task_id="fetch", batch='{"batch_index": 0, "batch_count": 1, "alerts": []}')
    assert set(MdeListAlertsOperator.template_fields) == {"data_interval_start", "data_interval_end", "mde_conn_id", "batch_size"}
    assert set(MdeFetchAlertIpsOperator.template_fields) == {"batch", "mde_conn_id", "refetch"}

    start = pendulum.datetime(2024, 3, 10, 13, tz="UTC")
    context = {"data_interval_start": start, "data_interval_end": start.add(hours=1), "params": {"conn": "mde_other", "size": 7}}
    lister.render_template_fields(context)
    assert lister.mde_conn_id == "mde_other"
    assert int(lister.batch_size) == 7
    assert to_ticks(lister.data_interval_start) == to_ticks(datetime(2024, 3, 10, 13, tzinfo=timezone.utc))
    assert to_ticks(lister.data_interval_end) - to_ticks(lister.data_interval_start) == 3600 * 10**7
    fetch.render_template_fields(context)
    assert json.loads(fetch.batch)["alerts"] == []


def test_both_operators_run_in_the_api_pool_also_when_mapped():
    with DAG("pool_probe", schedule=None, start_date=pendulum.datetime(2024, 1, 1)) as dag:
        lister = MdeListAlertsOperator(task_id="list")
        fetch = MdeFetchAlertIpsOperator.partial(task_id="fetch", mde_conn_id="mde_default").expand(batch=lister.output)
        other = MdeFetchAlertIpsOperator.partial(task_id="fetch_elsewhere", pool="other_pool").expand(
            batch=lister.output
        )
    assert lister.pool == MDE_POOL
    assert fetch.pool == MDE_POOL
    assert other.pool == "other_pool"
    # The scheduler sees the serialized DAG: the pool must survive serialization.
    serialized = json.dumps(DagSerialization.to_dict(dag))
    restored = DagSerialization.from_dict(json.loads(serialized))
    assert restored.get_task("fetch").pool == MDE_POOL
    assert restored.get_task("list").pool == MDE_POOL
    assert restored.get_task("fetch_elsewhere").pool == "other_pool"


def test_a_batch_that_is_not_a_batch_fails_at_once():
    op = MdeFetchAlertIpsOperator(task_id="fetch", batch='["not", "a", "batch"]')
    with pytest.raises(AirflowFailException, match="'alerts' list"):
        op.execute({})


def test_listing_document_is_json():
    listing = AlertListing(
        start=to_ticks("2024-03-10T13:00:00Z"),
        end=to_ticks("2024-03-10T14:00:00Z"),
        alerts=[{"id": "a", "lastUpdateTime": "2024-03-10T13:00:00.1234567Z", "mitreTechniques": ["T1"]}],
        stats=ListingStats(requests=1, items_received=1),
        listed_at=datetime(2024, 3, 10, 15, tzinfo=timezone.utc),
        tenant_id="tenant",
    )
    document = json.loads(json.dumps(listing.as_document()))
    assert document["start"] == "2024-03-10T13:00:00Z" and document["end"] == "2024-03-10T14:00:00Z"
    assert document["alerts"] == listing.alerts and document["tenant_id"] == "tenant"
    assert document["listed_at"] == "2024-03-10T15:00:00+00:00"


def test_an_alert_that_fails_for_good_is_recorded_as_error_and_the_batch_goes_on(caplog):
    # A 5xx every time (after the client's own retries), an answer that does not parse, an
    # id we refuse: each lands as 'error' with its reason; the rest of the batch is fetched.
    client = FakeIpsClient(
        {
            "ok": ["10.0.0.1"],
            "down": MdeServerError("MDE API failed after retries", status=500),
            "garbled": MdeMalformedResponseError("ips value[1] is not an object with a string 'id': '17'"),
            "later": [],
        }
    )
    results = fetch_batch_ips(client, batch_of("ok", "down", "garbled", "later"), clock=FakeClock())
    assert [r["status"] for r in results] == ["ok", "error", "error", "empty"]
    assert results[1]["error"].startswith("MdeServerError: MDE API failed after retries")
    assert results[2]["error"].startswith("MdeMalformedResponseError: ips value[1]")
    assert "error" not in results[0] and results[1]["ips"] == []
    assert client.asked == ["ok", "down", "garbled", "later"]
    assert json.loads(json.dumps(results)) == results
    assert "recorded with ips_status 'error'" in caplog.text


def test_more_failures_than_poison_alerts_explain_fail_the_batch():
    # max(2, 10% of the batch) failures are recorded; one more is an outage: the batch fails.
    answers = {f"a{i}": MdeServerError("MDE API failed after retries", status=503) for i in range(5)}
    client = FakeIpsClient(answers)
    with pytest.raises(MdeTooManyFailedAlertsError, match="3 alerts failed for good") as caught:
        fetch_batch_ips(client, batch_of(*answers), clock=FakeClock())
    assert isinstance(caught.value.__cause__, MdeServerError)
    assert client.asked == ["a0", "a1", "a2"]  # nothing spent after the threshold


def test_errors_that_are_never_per_alert_still_fail_the_batch_at_once():
    client = FakeIpsClient({"a": MdePermissionError("no Ip.Read.All", status=403), "b": []})
    with pytest.raises(MdePermissionError):
        fetch_batch_ips(client, batch_of("a", "b"), clock=FakeClock())
    assert client.asked == ["a"]


def test_only_a_backfill_runs_tasks_spend_the_budget_in_the_background():
    from airflow.utils.types import DagRunType

    @dataclass
    class Run:
        run_type: object

    assert is_backfill({"dag_run": Run(DagRunType.BACKFILL_JOB), "run_id": "x"})
    assert not is_backfill({"dag_run": Run(DagRunType.SCHEDULED), "run_id": "backfill__looks_like_one"})
    assert not is_backfill({"dag_run": Run(DagRunType.MANUAL)})
    # No run in the context (a mapped task seen from the scheduler): the run id's prefix.
    assert is_backfill({"run_id": "backfill__2026-01-01T00:00:00+00:00"})
    assert not is_backfill({"run_id": "scheduled__2026-01-01T00:00:00+00:00"})
