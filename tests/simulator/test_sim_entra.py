"""Entra ID stand-in: azure-identity gets tokens with TLS verified; errors look like Entra's;
tokens are checked on every API call (401 expired/invalid, 403 missing role)."""
import datetime as dt
import socket
import time
import uuid

import pytest
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError
from azure.identity import CertificateCredential, ClientSecretCredential
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from simhttp import MDE_SCOPE, Api, assert_mde_error
from mde_simulator import tls
from mde_simulator.process import SimulatorProcess


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One simulator for the tests that change nothing in it."""
    with SimulatorProcess(tmp_path_factory.mktemp("entra"), alerts=5) as process:
        yield process


@pytest.fixture
def sim(shared):
    shared.reset_stats()
    return shared


@pytest.fixture
def sim_api(sim):
    client = Api(sim)
    yield client
    client.close()


def secret_credential(info, **kwargs):
    return ClientSecretCredential(info["tenant_id"], kwargs.pop("client_id", info["client_id"]),
                                  kwargs.pop("secret", info["client_secret"]),
                                  authority=info["authority_host"],
                                  disable_instance_discovery=True, **kwargs)


def make_certificate(path, name="mde-client"):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()) + cert_pem)
    return cert_pem.decode()


def test_client_secret_credential_gets_a_token_with_tls_verified(sim, sim_api, monkeypatch):
    looked_up = []
    real_getaddrinfo = socket.getaddrinfo

    def recording_getaddrinfo(host, *args, **kwargs):
        looked_up.append(host)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recording_getaddrinfo)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", sim.ca_bundle)
    credential = secret_credential(sim.info)
    token = credential.get_token(MDE_SCOPE)
    assert token.expires_on > time.time() + 3000
    assert "login.microsoftonline.com" not in looked_up
    assert "127.0.0.1" in looked_up
    seen = [(r["endpoint"], r["status"]) for r in sim.requests()]
    assert seen == [("openid_configuration", 200), ("token", 200)]
    response = sim_api.get("/api/alerts", {"$top": "1"}, token=token.token)
    assert response.status_code == 200


def test_an_untrusted_ca_fails_verification(sim, tmp_path, monkeypatch):
    other_ca = tls.generate(tmp_path).ca_pem          # a valid CA, just not the server's
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other_ca))
    with pytest.raises((ClientAuthenticationError, ServiceRequestError)) as caught:
        secret_credential(sim.info, retry_total=0).get_token(MDE_SCOPE)
    assert "CERTIFICATE_VERIFY_FAILED" in repr(caught.value) + repr(caught.value.__context__)
    assert not [r for r in sim.requests() if r["endpoint"] == "token"]


def test_wrong_secret_gets_401_in_entra_shape(sim, sim_api):
    response = sim_api.token_response(secret="not-the-secret")
    assert response.status_code == 401
    body = response.json()
    assert set(body) >= {"error", "error_description", "error_codes", "timestamp",
                         "trace_id", "correlation_id"}
    assert body["error"] == "invalid_client"
    assert body["error_codes"] == [7000215]
    assert body["error_description"].startswith("AADSTS7000215:")
    uuid.UUID(body["trace_id"]), uuid.UUID(body["correlation_id"])
    assert "not-the-secret" not in response.text
    with pytest.raises(ClientAuthenticationError) as caught:
        secret_credential(sim.info, secret="not-the-secret",
                          connection_verify=sim.ca_bundle).get_token(MDE_SCOPE)
    assert "AADSTS7000215" in str(caught.value)
    assert sim.stats()["token_failures"] == 2


def test_tenant_client_and_scope_errors(sim, sim_api):
    wrong_tenant = sim_api.token_response(tenant="00000000-0000-0000-0000-000000000000")
    assert wrong_tenant.status_code == 400 and wrong_tenant.json()["error_codes"] == [90002]
    discovery = sim_api.session.get(
        f"{sim.base_url}/00000000-0000-0000-0000-000000000000/v2.0/"
        ".well-known/openid-configuration")
    assert discovery.status_code == 400 and "AADSTS90002" in discovery.json()["error_description"]
    unknown_client = sim_api.token_response(client_id=str(uuid.uuid4()))
    assert unknown_client.status_code == 400
    assert unknown_client.json()["error_codes"] == [700016]
    other_resource = sim_api.token_response(scope="https://graph.microsoft.com/.default")
    assert other_resource.status_code == 400
    assert other_resource.json()["error_codes"] == [500011]
    regional = sim_api.token_response(scope="https://api-eu.securitycenter.microsoft.com/.default")
    assert regional.json()["error_codes"] == [500011]
    not_default = sim_api.token_response(scope="https://sim_api.securitycenter.microsoft.com/Alert.Read.All")
    assert not_default.status_code == 400 and not_default.json()["error_codes"] == [1002012]
    no_credential = sim_api.session.post(
        f"{sim.base_url}/{sim.info['tenant_id']}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": sim.info["client_id"],
              "scope": MDE_SCOPE})
    assert no_credential.status_code == 401
    assert no_credential.json()["error_codes"] == [7000218]
    legacy = sim_api.token_response(
        scope="https://securitycenter.onmicrosoft.com/windowsatpservice/.default")
    assert legacy.status_code == 200 and legacy.json()["token_type"] == "Bearer"
    assert sim_api.get("/api/alerts", {"$top": "1"},
                   token=legacy.json()["access_token"]).status_code == 200


@pytest.mark.parametrize("simulator", [{"alerts": 5, "token_lifetime": 1.5}], indirect=True)
def test_expired_token_gets_401(simulator, api):
    response = api.token_response()
    assert response.json()["expires_in"] in (1, 2)
    token = response.json()["access_token"]
    assert api.get("/api/alerts", token=token).status_code == 200
    time.sleep(1.6)
    error = assert_mde_error(api.get("/api/alerts", token=token), 401, "Unauthorized")
    assert "expired" in error["message"]


def test_missing_malformed_forged_and_revoked_tokens_get_401(simulator, api):
    assert_mde_error(api.get("/api/alerts", token=False), 401)
    response = api.get("/api/alerts", token=False, headers={"Authorization": "Basic abc"})
    assert_mde_error(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert_mde_error(api.get("/api/alerts", token="not.a.jwt"), 401)
    genuine = api.token()
    header, claims, signature = genuine.split(".")
    forged = ".".join([header, claims, signature[:-4] + ("AAAA" if signature[-4:] != "AAAA"
                                                          else "BBBB")])
    assert_mde_error(api.get("/api/alerts", token=forged), 401)
    assert api.get("/api/alerts", token=genuine).status_code == 200
    simulator.configure(revoke_tokens=True)
    assert_mde_error(api.get("/api/alerts", token=genuine), 401)
    assert api.get("/api/alerts", token=api.token(fresh=True)).status_code == 200


def test_token_without_the_role_gets_403(simulator, api):
    limited = api.token(simulator.info["limited_client_id"],
                        simulator.info["limited_client_secret"])
    error = assert_mde_error(api.get("/api/alerts/x/ips", token=limited), 403, "Forbidden")
    assert "Ip.Read.All" in error["message"]
    simulator.configure(clients=[{"client_id": "no-roles", "client_secret": "s3cret",
                                  "roles": []}])
    nothing = api.token("no-roles", "s3cret")
    assert_mde_error(api.get("/api/alerts", token=nothing), 403, "Forbidden")


def test_certificate_credential_with_a_registered_certificate(tmp_path):
    from mde_simulator.process import SimulatorProcess
    pem_file = tmp_path / "client.pem"
    make_certificate(pem_file)
    with SimulatorProcess(tmp_path / "sim", alerts=5, client_cert_pem=[pem_file]) as sim:
        info = sim.info
        credential = CertificateCredential(
            info["tenant_id"], info["client_id"], certificate_path=str(pem_file),
            authority=info["authority_host"], disable_instance_discovery=True,
            connection_verify=info["ca_bundle"])
        assert credential.get_token(MDE_SCOPE).token

        other_file = tmp_path / "other.pem"
        other_pem = make_certificate(other_file, "not-registered")
        unregistered = CertificateCredential(
            info["tenant_id"], info["client_id"], certificate_path=str(other_file),
            authority=info["authority_host"], disable_instance_discovery=True,
            connection_verify=info["ca_bundle"])
        with pytest.raises(ClientAuthenticationError) as caught:
            unregistered.get_token(MDE_SCOPE)
        assert "AADSTS700027" in str(caught.value)

        # Registered at run time (x5t thumbprint lookup), the same certificate now works.
        sim.configure(client_certificates={info["client_id"]: other_pem})
        fresh = CertificateCredential(
            info["tenant_id"], info["client_id"], certificate_path=str(other_file),
            authority=info["authority_host"], disable_instance_discovery=True,
            connection_verify=info["ca_bundle"])
        assert fresh.get_token(MDE_SCOPE).token


def test_ps256_assertion_with_sha256_thumbprint(tmp_path):
    """MSAL signs PS256 with x5t#S256 when given the public certificate."""
    import msal
    import requests

    from mde_simulator.process import SimulatorProcess
    pem_file = tmp_path / "client.pem"
    cert_pem = make_certificate(pem_file)
    key_pem = pem_file.read_text().split("-----BEGIN CERTIFICATE-----")[0]
    with SimulatorProcess(tmp_path / "sim", alerts=5) as sim:
        info = sim.info
        sim.configure(clients=[{"client_id": "cert-only", "tenant_id": info["tenant_id"],
                                "roles": ["Alert.Read.All"], "certificates": [cert_pem]}])
        session = requests.Session()
        session.trust_env = False   # an ambient REQUESTS_CA_BUNDLE would win over .verify
        session.verify = info["ca_bundle"]
        app = msal.ConfidentialClientApplication(
            "cert-only", authority=f"{info['authority_host']}/{info['tenant_id']}",
            client_credential={"private_key": key_pem, "public_certificate": cert_pem},
            instance_discovery=False, http_client=session)
        result = app.acquire_token_for_client([MDE_SCOPE])
        assert "access_token" in result, result
        assert sim.stats()["tokens_issued"] == 1
        # The same client cannot use a secret: it has none.
        response = session.post(info["token_url"], data={
            "grant_type": "client_credentials", "client_id": "cert-only",
            "client_secret": "guess", "scope": MDE_SCOPE})
        assert response.status_code == 401 and response.json()["error_codes"] == [7000215]
