"""MdeClient / MdeHook against the HTTPS simulator (Entra ID + MDE stand-in).

TLS is verified: the simulator's CA is trusted only through REQUESTS_CA_BUNDLE, added
to certifi's roots by the client. Tokens come from azure-identity talking to the
simulator's token endpoint (custom authority, no instance discovery).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time

import pytest

from mde_pipeline.api.client import MdeClient
from mde_pipeline.api.config import MdeConnectionConfig
from mde_pipeline.api.errors import (
    MdeAuthenticationError,
    MdeConfigurationError,
    MdeMalformedResponseError,
    MdeMostlyNotFoundError,
    MdePermissionError,
    MdeServerError,
    MdeTrustError,
    MdeUnexpectedNotFoundError,
)
from mde_pipeline.api.fetch import fetch_batch_ips
from mde_pipeline.airflow.hooks import MdeHook
from mde_simulator.process import SimulatorProcess
from tests.integration.simulator_env import use_simulator

pytestmark = pytest.mark.slow

TIGHT = [[10, 1], [50, 5]]
# Covers reservation -> arrival latency of requests still in flight a window later (see
# rate_limiter "Settling"); finished requests are settled to their end time.
MARGIN = 0.05
RUNTIME_DEFAULTS = {
    "fault_5xx": 0.0, "fault_slow": 0.0, "fault_drop": 0.0, "fault_malformed": 0.0, "fault_trickle": 0.0,
    "fault_endpoints": ["list", "ips", "alert"], "rate_limits": [[100, 60], [1500, 3600]],
    "token_lifetime": 3599, "retry_after_script": [], "proxy_404": False, "vanish_rate": 0.0,
}  # fmt: skip


@pytest.fixture(scope="module")
def mde_sim(tmp_path_factory):
    with SimulatorProcess(tmp_path_factory.mktemp("mde_sim"), alerts=120, seed=7) as sim:
        yield sim


@pytest.fixture
def sim(mde_sim, monkeypatch, tmp_path):
    """The module's simulator, reset, with this test's env: its CA, a fresh ledger dir."""
    mde_sim.configure(**RUNTIME_DEFAULTS)
    mde_sim.reset_stats(limiter=True)
    yield use_simulator(mde_sim, monkeypatch, tmp_path)
    mde_sim.configure(**RUNTIME_DEFAULTS)


def make_client(sim, *, login=None, password=None, **extra) -> MdeClient:
    extra.setdefault("rate_limit_margin_seconds", MARGIN)
    conn = json.loads(sim.connection_uri(login=login, password=password, **extra))
    config = MdeConnectionConfig.from_parts(
        host=conn["host"], login=conn["login"], password=conn["password"], extra=conn["extra"]
    )
    return MdeClient(config)


def truth(sim) -> dict:
    return sim.ground_truth()["alerts"]


def ids_with(sim, status: str, count: int) -> list[str]:
    found = [alert_id for alert_id, a in sorted(truth(sim).items()) if a["ips_status"] == status and not a["vanished"]]
    assert len(found) >= count, f"simulator has only {len(found)} alerts with ips_status={status}"
    return found[:count]


# ------------------------------------------------------------------ authentication


def test_token_from_a_custom_authority_without_instance_discovery(sim):
    with make_client(sim) as client:
        alert_id = ids_with(sim, "ok", 1)[0]
        assert client.get_alert_ips(alert_id) == truth(sim)[alert_id]["served_ips"]
    calls = sim.stats()["calls"]
    assert calls["token"] == {"200": 1}
    assert "instance_discovery" not in calls  # nothing asked login.microsoftonline.com


def test_without_the_simulator_ca_tls_verification_fails_clearly_and_at_once(sim, monkeypatch):
    # A trust failure is configuration: a configuration error naming the bundle, not retried.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with make_client(sim, retry_total=3, retry_backoff_factor=5) as client:
        with pytest.raises(MdeTrustError, match="TLS verification failed.*not trusted by certifi's roots only") as info:
            client.list_alerts_page(filter=None, top=1)
    assert isinstance(info.value, MdeConfigurationError)  # the operators fail such a task at once
    # ... and the client asked once: azure-identity's token retries skip TLS failures too
    # (TokenRetryPolicy); with retry_backoff_factor 5 a retry would also cost 5-20 s each.
    assert sim.stats()["tls_handshake_failures"] == 1


def test_wrong_secret_is_an_authentication_error_with_the_aadsts_code_and_no_secret(sim):
    wrong = "wrong~Secret.0000000000000000000"
    with make_client(sim, password=wrong) as client:
        with pytest.raises(MdeAuthenticationError) as info:
            client.list_alerts_page(filter=None, top=1)
    error = info.value
    assert error.code == "AADSTS7000215"
    assert error.target  # Entra's correlation id
    assert wrong not in str(error) and wrong not in repr(error)
    assert sim.stats()["calls"].get("list") is None  # no API call without a token


def test_wrong_tenant_is_an_authentication_error_naming_the_tenant(sim):
    # MSAL fails at the tenant's openid-configuration (400 AADSTS90002) before any token
    # request, and says to check the tenant.
    wrong = "00000000-0000-0000-0000-000000000001"
    with make_client(sim, tenant_id=wrong) as client:
        with pytest.raises(MdeAuthenticationError, match="tenant") as info:
            client.list_alerts_page(filter=None, top=1)
    assert wrong in str(info.value)
    assert sim.stats()["calls"]["openid_configuration"] == {"400": 1}


def test_a_regional_host_as_scope_is_refused_by_entra(sim):
    with make_client(sim, scope="https://eu.api.security.microsoft.com/.default") as client:
        with pytest.raises(MdeAuthenticationError) as info:
            client.list_alerts_page(filter=None, top=1)
    assert info.value.code == "AADSTS500011"


def test_a_token_revoked_mid_run_is_replaced_and_the_call_succeeds(sim):
    alert_ids = ids_with(sim, "ok", 3)
    with make_client(sim) as client:
        assert client.get_alert_ips(alert_ids[0]) is not None
        sim.configure(revoke_tokens=True)
        assert client.get_alert_ips(alert_ids[1]) == truth(sim)[alert_ids[1]]["served_ips"]
        assert client.get_alert_ips(alert_ids[2]) == truth(sim)[alert_ids[2]]["served_ips"]
    stats = sim.stats()
    assert stats["calls"]["ips"] == {"200": 3, "401": 1}
    assert stats["tokens_issued"] == 2


def test_short_lived_tokens_are_refreshed_by_the_library(sim):
    sim.configure(token_lifetime=1.5)
    alert_ids = ids_with(sim, "ok", 3)
    with make_client(sim) as client:
        for alert_id in alert_ids:
            assert client.get_alert_ips(alert_id) is not None
    assert "401" not in sim.stats()["calls"]["ips"]


def self_signed_pem(common_name: str) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for an app registration's certificate credential."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256())
    )  # fmt: skip
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def test_certificate_credential_against_the_simulator(sim, tmp_path):
    cert, key = self_signed_pem("mde-app-cert")
    sim.configure(client_certificates={sim.info["client_id"]: cert.decode()})
    (tmp_path / "app.pem").write_bytes(key + cert)
    conn = json.loads(sim.connection_uri(certificate_path=str(tmp_path / "app.pem")))
    config = MdeConnectionConfig.from_parts(host=conn["host"], login=conn["login"], password=None, extra=conn["extra"])
    assert config.auth_method == "certificate"
    with MdeClient(config) as client:
        assert client.list_alerts_page(filter=None, top=2)["value"]


def test_missing_ip_read_all_names_the_permission(sim):
    with make_client(sim, login=sim.info["limited_client_id"], password=sim.info["limited_client_secret"]) as client:
        assert client.list_alerts_page(filter=None, top=1)["value"]  # Alert.Read.All is there
        with pytest.raises(MdePermissionError, match="Ip.Read.All") as info:
            client.get_alert_ips(ids_with(sim, "ok", 1)[0])
    assert info.value.status == 403
    assert info.value.permission == "Ip.Read.All"
    assert info.value.target


# ------------------------------------------------------------------ answers


def test_404_is_none_and_empty_is_an_empty_list(sim):
    with make_client(sim) as client:
        assert client.get_alert_ips(ids_with(sim, "not_found", 1)[0]) is None
        assert client.get_alert_ips(ids_with(sim, "empty", 1)[0]) == []
        assert client.get_alert_ips("da000000000000000000_-1") is None


def test_5xx_is_retried_until_it_succeeds(sim):
    sim.configure(fault_5xx=0.5, fault_endpoints=["ips"])
    alert_ids = ids_with(sim, "ok", 12)
    with make_client(sim, retry_total=8, retry_backoff_factor=0.01) as client:
        got = {alert_id: client.get_alert_ips(alert_id) for alert_id in alert_ids}
        stats = client.stats.snapshot()
    assert got == {alert_id: truth(sim)[alert_id]["served_ips"] for alert_id in alert_ids}
    faults = sim.stats()["faults"]
    assert faults["500"] + faults["503"] == stats.retries > 0


def test_persistent_5xx_is_a_server_error_after_retry_total(sim):
    sim.configure(fault_5xx=1.0, fault_endpoints=["ips"])
    with make_client(sim, retry_total=2, retry_backoff_factor=0.01) as client:
        with pytest.raises(MdeServerError) as info:
            client.get_alert_ips(ids_with(sim, "ok", 1)[0])
    assert info.value.status in (500, 503)
    assert info.value.target
    assert sum(sim.stats()["calls"]["ips"].values()) == 3


def test_read_timeout_is_retried_then_a_server_error(sim):
    sim.configure(fault_slow=1.0, slow_seconds=2.0, fault_endpoints=["ips"])
    with make_client(sim, read_timeout=0.4, retry_total=1, retry_backoff_factor=0) as client:
        with pytest.raises(MdeServerError, match="timed out"):
            client.get_alert_ips(ids_with(sim, "ok", 1)[0])
        assert client.stats.calls == 2


def test_a_trickling_body_is_cut_at_the_request_deadline(sim):
    # Every read arrives within 0.05 s (the read timeout never fires); the body takes 10 s.
    sim.configure(fault_trickle=1.0, trickle_seconds=10.0, fault_endpoints=["ips"])
    alert_id = ids_with(sim, "ok", 1)[0]
    started = time.monotonic()
    with make_client(sim, read_timeout=1, request_deadline_seconds=1.5, retry_total=1,
                     retry_backoff_factor=0) as client:  # fmt: skip
        with pytest.raises(MdeServerError, match="request_deadline_seconds=1.5"):
            client.get_alert_ips(alert_id)
        assert client.stats.calls == 2
        assert time.monotonic() - started < 8  # two attempts of 1.5 s, not two of 10 s
        sim.configure(fault_trickle=0.0)
        assert client.get_alert_ips(alert_id) == truth(sim)[alert_id]["served_ips"]  # the client still works


def test_dropped_connections_are_retried(sim):
    sim.configure(fault_drop=0.4, fault_endpoints=["ips"])
    alert_ids = ids_with(sim, "ok", 10)
    with make_client(sim, retry_total=8, retry_backoff_factor=0.01) as client:
        got = {alert_id: client.get_alert_ips(alert_id) for alert_id in alert_ids}
    assert got == {alert_id: truth(sim)[alert_id]["served_ips"] for alert_id in alert_ids}
    assert sim.stats()["faults"]["drop"] > 0


def test_always_dropped_connection_is_a_server_error(sim):
    sim.configure(fault_drop=1.0, fault_endpoints=["ips"])
    with make_client(sim, retry_total=1, retry_backoff_factor=0) as client:
        with pytest.raises(MdeServerError, match="dropped|connect"):
            client.get_alert_ips(ids_with(sim, "ok", 1)[0])


def test_malformed_json_is_an_error_not_an_empty_result(sim):
    sim.configure(fault_malformed=1.0)
    with make_client(sim) as client:
        with pytest.raises(MdeMalformedResponseError):
            client.get_alert_ips(ids_with(sim, "ok", 1)[0])
        with pytest.raises(MdeMalformedResponseError):
            client.list_alerts_page(filter=None, top=5)


def test_no_secret_or_token_reaches_the_logs(sim, caplog):
    caplog.set_level(logging.DEBUG)
    sim.configure(fault_5xx=0.3, fault_endpoints=["ips"])
    with make_client(sim, retry_backoff_factor=0.01) as client:
        for alert_id in ids_with(sim, "ok", 5):
            client.get_alert_ips(alert_id)
        token = client._auth_policy._token.token
    with make_client(sim, password="wrong~Secret.1111111111111111111") as client:
        with pytest.raises(MdeAuthenticationError):
            client.get_alert_ips(ids_with(sim, "ok", 1)[0])
    assert token and token not in caplog.text
    assert "eyJ" not in caplog.text  # no JWT at all
    assert sim.info["client_secret"] not in caplog.text
    assert "wrong~Secret" not in caplog.text
    assert "Authorization" not in caplog.text


# ------------------------------------------------------------------ rate limits


def max_calls(stats: dict, seconds: float) -> int:
    (client,) = [c for c in stats["clients"] if c["calls"]]
    (window,) = [w for w in client["windows"] if w["seconds"] == seconds]
    return window["all"]["max_calls"]


def test_one_caller_in_tight_windows_gets_no_429(sim):
    sim.configure(rate_limits=TIGHT)
    alert_ids = ids_with(sim, "ok", 30)
    with make_client(sim, rate_limits=TIGHT) as client:
        page = client.list_alerts_page(filter=None, top=5)  # listing spends the same budget
        got = {alert_id: client.get_alert_ips(alert_id) for alert_id in alert_ids}
        assert client.stats.throttled == 0
    assert page["value"]
    assert got == {alert_id: truth(sim)[alert_id]["served_ips"] for alert_id in alert_ids}
    stats = sim.stats()
    assert stats["throttled"] == 0
    assert max_calls(stats, 1) <= 10 and max_calls(stats, 5) <= 50
    assert max_calls(stats, 1) == 10  # and the budget was actually used


def _fetch_in_process(alert_ids, ready, start, results):
    """A pool slot: its own process, the real Airflow connection lookup, the shared ledger."""
    hook = MdeHook()
    client = hook.get_client()
    ready.put(os.getpid())
    start.wait(120)
    try:
        got = {alert_id: client.get_alert_ips(alert_id) for alert_id in alert_ids}
        results.put(("ok", got, client.stats.snapshot().throttled))
    except Exception as exc:  # reported to the parent, which fails the test
        results.put(("error", repr(exc), None))
    finally:
        hook.close()


def test_three_processes_sharing_the_ledger_get_no_429(sim, monkeypatch):
    sim.configure(rate_limits=TIGHT)
    monkeypatch.setenv(
        "AIRFLOW_CONN_MDE_DEFAULT", sim.connection_uri(rate_limits=TIGHT, rate_limit_margin_seconds=MARGIN)
    )
    alert_ids = ids_with(sim, "ok", 60)
    ctx = multiprocessing.get_context("fork")  # children inherit the imports: no 7 s Airflow import each
    ready, start, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    workers = [
        ctx.Process(target=_fetch_in_process, args=(alert_ids[i::3], ready, start, results)) for i in range(3)
    ]
    for worker in workers:
        worker.start()
    try:
        for _ in workers:
            ready.get(timeout=180)
        start.set()
        outcomes = [results.get(timeout=180) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
    errors = [detail for status, detail, _ in outcomes if status != "ok"]
    assert not errors
    got = {k: v for _, detail, _ in outcomes for k, v in detail.items()}
    assert got == {alert_id: truth(sim)[alert_id]["served_ips"] for alert_id in alert_ids}
    stats = sim.stats()
    assert stats["throttled"] == 0
    assert sum(throttled for _, _, throttled in outcomes) == 0
    assert max_calls(stats, 1) <= 10 and max_calls(stats, 5) <= 50


def test_a_429_storm_is_ridden_out_via_retry_after_with_nothing_lost(sim):
    # The service's limits drop below what the client was configured for: it gets 429s,
    # waits each Retry-After out in the ledger, and loses nothing.
    sim.configure(rate_limits=[[4, 1], [10, 3]])
    alert_ids = ids_with(sim, "ok", 24)
    with make_client(sim, rate_limits=TIGHT) as client:
        got = {alert_id: client.get_alert_ips(alert_id) for alert_id in alert_ids}
        stats = client.stats.snapshot()
    assert got == {alert_id: truth(sim)[alert_id]["served_ips"] for alert_id in alert_ids}
    server = sim.stats()
    assert server["throttled"] == stats.throttled > 0
    assert stats.wait_seconds > 0
    # Never called during a throttle (which would prolong it): a 429 is always followed
    # by an admitted call.
    statuses = [r["status"] for r in sim.requests() if r["endpoint"] == "ips"]
    assert all(not (a == 429 and b == 429) for a, b in zip(statuses, statuses[1:]))


# ------------------------------------------------------------------ bounded waits, honest 404s (issue 12)


def test_an_absurd_retry_after_costs_one_short_backoff_and_leaves_no_long_block(sim):
    # Before: "budget is blocked for 999999762s more" for every task on the host.
    sim.configure(retry_after_script=["999999999"], fault_endpoints=["ips"])
    alert_ids = ids_with(sim, "ok", 3)
    started = time.monotonic()
    with make_client(sim, throttle_backoff_seconds=0.5) as client:
        got = [client.get_alert_ips(alert_id) for alert_id in alert_ids]
        block = client.limiter.ledger.blocked_until(client.config.budget_key) - time.time()
        longest = max(w.seconds for w in client.config.rate_limits)
        stats = client.stats.snapshot()
    assert got == [truth(sim)[alert_id]["served_ips"] for alert_id in alert_ids]
    # Bound: one extra call (the 429) and one backoff of 0.5 s (+ margin) for the three alerts.
    assert sim.stats()["calls"]["ips"] == {"429": 1, "200": 3}
    assert (stats.calls, stats.throttled) == (4, 1)
    assert block <= longest + 60  # here about -0.5 s: the short backoff has passed
    # The wait is ~0.55 s less the time between the 429 and the next reservation.
    assert 0 < stats.wait_seconds < 2 and time.monotonic() - started < 30


def test_garbage_negative_and_zero_retry_after_back_off_a_bounded_number_of_times(sim):
    script = ["soon", "Wed, 32 Foo 2026 99:99:99 GMT", "-5", "0", {"status": 429, "retry_after": None}]
    sim.configure(retry_after_script=script, fault_endpoints=["ips"])
    alert_id = ids_with(sim, "ok", 1)[0]
    with make_client(sim, throttle_backoff_seconds=0.1) as client:
        assert client.get_alert_ips(alert_id) == truth(sim)[alert_id]["served_ips"]
        stats = client.stats.snapshot()
    # Bound: 5 throttled calls + 1 (of at most 7), backing off 0.1, 0.2, 0.4, 0.8, 1.6 s.
    assert sim.stats()["calls"]["ips"] == {"429": 5, "200": 1}
    assert stats.calls == 6 and 2.5 <= stats.wait_seconds < 5  # 3.1 s + margins - time spent between


def test_a_503_asking_for_an_hour_waits_only_retry_backoff_max(sim):
    sim.configure(retry_after_script=[{"status": 503, "retry_after": "3000"}], fault_endpoints=["ips"])
    alert_id = ids_with(sim, "ok", 1)[0]
    started = time.monotonic()
    with make_client(sim, retry_backoff_max=1) as client:
        assert client.get_alert_ips(alert_id) == truth(sim)[alert_id]["served_ips"]
    assert sim.stats()["calls"]["ips"] == {"503": 1, "200": 1}
    assert time.monotonic() - started < 20


def test_a_proxy_html_404_is_an_error_naming_the_host_not_a_gone_alert(sim):
    gone, alive = ids_with(sim, "ok", 2)
    sim.configure(proxy_404=[gone])
    with make_client(sim, retry_total=2, retry_backoff_factor=0.01) as client:
        assert client.get_alert_ips(alive) == truth(sim)[alive]["served_ips"]
        with pytest.raises(MdeUnexpectedNotFoundError, match="127.0.0.1") as info:
            client.get_alert_ips(gone)
    assert info.value.status == 404
    assert sim.stats()["faults"] == {"proxy_404": 3}  # first try + retry_total, then the error


def test_a_batch_mostly_not_found_fails_naming_the_host(sim):
    # Every listed alert vanishes (the service's own 404): 6 of 10 calls, then the error.
    alert_ids = ids_with(sim, "ok", 10)
    sim.configure(vanish_rate=1.0)
    batch = {"batch_index": 1, "batch_count": 1,
             "alerts": [{"alert_id": a, "last_update_time": truth(sim)[a]["lastUpdateTime"]} for a in alert_ids]}
    with make_client(sim) as client:
        with pytest.raises(MdeMostlyNotFoundError, match=sim.base_url):
            fetch_batch_ips(client, batch)
    assert sim.stats()["calls"]["ips"] == {"404": 6}
