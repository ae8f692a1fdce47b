"""One tenant, three spellings (GUID upper case, lower case, verified domain), against the
HTTPS simulator: the client's tenant is always the lower-case GUID, the domain resolved
from the token's tid claim without an extra token request."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from mde_pipeline.api.client import MdeClient
from mde_pipeline.api.config import MdeConnectionConfig
from mde_pipeline.api.errors import MdeAuthenticationError
from mde_pipeline.api.listing import list_interval
from mde_simulator.process import SimulatorProcess

pytestmark = pytest.mark.slow

GUID = "3c5e2a17-9b0d-4f6e-8a21-7d4b9c0e1f23"
DOMAIN = "Contoso.onmicrosoft.com"
START = datetime(2026, 5, 4, 8, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    # The simulator is started with the GUID in upper case: tokens still carry it lower-cased.
    with SimulatorProcess(tmp_path_factory.mktemp("sim"), alerts=6, seed=3, tenant_id=GUID.upper(),
                          tenant_domain=DOMAIN, start=START.isoformat(),
                          end=(START + timedelta(hours=1)).isoformat()) as process:
        yield process


@pytest.fixture
def client_for(sim, monkeypatch, tmp_path):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", sim.ca_bundle)
    monkeypatch.setenv("MDE_RATE_LIMIT_LEDGER_DIR", str(tmp_path / "ledger"))
    clients = []

    def make(tenant: str) -> MdeClient:
        conn = json.loads(sim.connection_uri(tenant_id=tenant))
        config = MdeConnectionConfig.from_parts(host=conn["host"], login=conn["login"], password=conn["password"],
                                                extra=conn["extra"])
        clients.append(MdeClient(config))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def test_every_spelling_of_the_tenant_is_the_lower_case_guid(sim, client_for):
    assert sim.info["tenant_id"] == GUID and sim.ground_truth()["tenant_id"] == GUID
    for spelling in (GUID.upper(), GUID, DOMAIN, DOMAIN.upper()):
        sim.reset_stats()
        client = client_for(spelling)
        listing = list_interval(client, START, START + timedelta(hours=1))
        assert listing.tenant_id == client.tenant_id == GUID, spelling
        assert listing.alerts
        # A domain is resolved from the token the listing used: one token request in all.
        assert sim.stats()["calls"]["token"] == {"200": 1}, spelling


def test_a_guid_needs_no_token_to_be_canonical(sim, client_for):
    sim.reset_stats()
    assert client_for(GUID.upper()).tenant_id == GUID
    assert "token" not in sim.stats()["calls"]


def test_an_unknown_domain_is_an_authentication_error_naming_it(sim, client_for):
    # As for a wrong GUID, MSAL stops at the tenant's openid-configuration (400 AADSTS90002).
    sim.reset_stats()
    client = client_for("fabrikam.onmicrosoft.com")
    with pytest.raises(MdeAuthenticationError, match="tenant fabrikam.onmicrosoft.com"):
        client.tenant_id
    assert sim.stats()["calls"]["openid_configuration"] == {"400": 1}
