"""azure-identity credential per auth method; trust bundle = certifi + extra CAs."""

from __future__ import annotations

import os

import certifi
import pytest
from azure.identity import (
    CertificateCredential,
    ClientSecretCredential,
    ManagedIdentityCredential,
    WorkloadIdentityCredential,
)

from mde_pipeline.api.credentials import build_credential, transport_for
from mde_pipeline.api.tls import TrustBundleError, trust_bundle


@pytest.fixture(autouse=True)
def _no_ca_env(monkeypatch):
    for var in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.delenv(var, raising=False)


def test_without_extra_cas_the_bundle_is_certifi():
    assert trust_bundle() == certifi.where()


def test_extra_cas_are_added_to_certifi_not_substituted(monkeypatch, tmp_path, mde_cert_pem):
    ca_one, _ = mde_cert_pem("ca-one")
    ca_two, _ = mde_cert_pem("ca-two")
    (tmp_path / "one.pem").write_bytes(ca_one)
    (tmp_path / "two.pem").write_bytes(ca_two)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "one.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "two.pem"))
    path = trust_bundle()
    content = open(path, "rb").read()
    with open(certifi.where(), "rb") as handle:
        assert handle.read().strip() in content
    assert ca_one.strip() in content and ca_two.strip() in content
    assert trust_bundle() == path  # content-addressed: same inputs, same file


def test_a_ca_directory_and_the_connection_ca_bundle_are_included(tmp_path, mde_cert_pem):
    ca, _ = mde_cert_pem("dir-ca")
    (tmp_path / "cas").mkdir()
    (tmp_path / "cas" / "a.crt").write_bytes(ca)
    (tmp_path / "cas" / "README").write_text("not a certificate")
    assert ca.strip() in open(trust_bundle([str(tmp_path / "cas")]), "rb").read()


def test_a_missing_or_empty_ca_file_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "missing.pem"))
    with pytest.raises(TrustBundleError, match="REQUESTS_CA_BUNDLE"):
        trust_bundle()
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    (tmp_path / "empty.pem").write_text("nothing here")
    with pytest.raises(TrustBundleError, match="no PEM certificate"):
        trust_bundle([str(tmp_path / "empty.pem")])


def test_transport_verifies_against_the_bundle_with_the_configured_timeouts(mde_make_config):
    transport = transport_for(mde_make_config(timeout={"connect": 3, "read": 7}))
    assert transport.connection_config.verify == certifi.where()
    assert transport.connection_config.timeout == 3
    assert transport.connection_config.read_timeout == 7


def test_client_secret_with_a_custom_authority_skips_instance_discovery(mde_make_config):
    config = mde_make_config(authority_host="https://127.0.0.1:9443")
    credential = build_credential(config)
    assert isinstance(credential, ClientSecretCredential)
    assert credential._authority == "https://127.0.0.1:9443"
    assert credential._instance_discovery is False  # never asks login.microsoftonline.com


def test_client_secret_with_a_public_authority_keeps_instance_discovery(mde_make_config):
    credential = build_credential(mde_make_config(cloud="commercial", host=None))
    assert credential._authority == "https://login.microsoftonline.com"
    assert credential._instance_discovery in (None, True)


def test_certificate_from_pem_data_with_password(mde_make_config, mde_cert_pem):
    cert, key = mde_cert_pem("app", password=b"pw-1234")
    config = mde_make_config(password=None, certificate_data=(key + cert).decode(), certificate_password="pw-1234")
    assert config.auth_method == "certificate"
    assert isinstance(build_credential(config), CertificateCredential)


def test_certificate_from_path(mde_make_config, mde_cert_pem, tmp_path):
    cert, key = mde_cert_pem("app")
    (tmp_path / "app.pem").write_bytes(key + cert)
    config = mde_make_config(password=None, certificate_path=str(tmp_path / "app.pem"))
    assert isinstance(build_credential(config), CertificateCredential)


def test_certificate_data_that_is_not_a_certificate_is_refused(mde_make_config):
    config = mde_make_config(password=None, certificate_data="definitely not base64 or PEM!")
    with pytest.raises(ValueError, match="certificate_data"):
        build_credential(config)


def test_managed_identity_with_a_client_id(mde_make_config):
    config = mde_make_config(login=None, password=None, use_managed_identity=True, managed_identity_client_id="mi-1")
    assert isinstance(build_credential(config), ManagedIdentityCredential)
    assert config.budget_key.endswith(":mi-1")


def test_workload_identity_reads_a_federated_token_file(mde_make_config, tmp_path):
    (tmp_path / "token").write_text("federated-jwt")
    config = mde_make_config(
        password=None, use_workload_identity=True, federated_token_file=str(tmp_path / "token"),
        authority_host="https://127.0.0.1:9443",
    )  # fmt: skip
    credential = build_credential(config)
    assert isinstance(credential, WorkloadIdentityCredential)


def test_workload_identity_without_a_token_file_says_what_is_missing(mde_make_config, monkeypatch):
    monkeypatch.delenv("AZURE_FEDERATED_TOKEN_FILE", raising=False)
    config = mde_make_config(password=None, use_workload_identity=True)
    with pytest.raises(ValueError, match="token_file_path"):
        build_credential(config)


def test_credential_transport_trusts_extra_cas(monkeypatch, tmp_path, mde_make_config, mde_cert_pem):
    ca, _ = mde_cert_pem("corp-ca")
    (tmp_path / "corp.pem").write_bytes(ca)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "corp.pem"))
    transport = transport_for(mde_make_config())
    bundle = transport.connection_config.verify
    assert bundle != certifi.where() and os.path.exists(bundle)
    assert ca.strip() in open(bundle, "rb").read()


def test_a_planted_bundle_file_is_replaced_not_trusted(monkeypatch, tmp_path, mde_cert_pem):
    ca, _ = mde_cert_pem("real-ca")
    (tmp_path / "real.pem").write_bytes(ca)
    path = trust_bundle([str(tmp_path / "real.pem")])
    evil, _ = mde_cert_pem("planted-ca")
    with open(path, "wb") as handle:
        handle.write(evil)
    assert trust_bundle([str(tmp_path / "real.pem")]) == path
    content = open(path, "rb").read()
    assert ca.strip() in content and evil.strip() not in content
    assert os.stat(os.path.dirname(path)).st_mode & 0o077 == 0
