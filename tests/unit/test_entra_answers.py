"""How a failed token request is judged by Entra's last answer (api/entra_answers.py), and
secrets remembered once stay out of every later message (common/redaction.py)."""

from __future__ import annotations

import pytest

from mde_pipeline.airflow.operators import is_configuration_error
from mde_pipeline.api.entra_answers import EntraAnswer, token_request_error
from mde_pipeline.api.errors import MdeAuthenticationError, MdeEntraConfigurationError
from mde_pipeline.common.redaction import redact, remember_secrets
from mde_simulator.config import validate_runtime

URL = "https://mde.unit.test/api/alerts"


@pytest.fixture
def config(mde_make_config):
    return mde_make_config(cloud="commercial")


@pytest.mark.parametrize(
    "answer,configuration,status",
    [
        (EntraAnswer("metadata", 400), True, 400),
        (EntraAnswer("token", 400, "AADSTS900023", "AADSTS900023: bad tenant"), True, 400),
        (EntraAnswer("instance discovery", 400), True, 400),
        (EntraAnswer("token", 401, "AADSTS7000215", "AADSTS7000215: Invalid client secret"), True, 401),
        (EntraAnswer("token", 503), False, None),  # after the credential's retries: worth a task retry
        (EntraAnswer("metadata", 500), False, None),
        (None, False, None),  # no answer at all (network)
    ],
)
def test_the_status_of_entras_last_answer_decides(config, answer, configuration, status):
    error = token_request_error(config, "Authentication failed: something", answer, URL, config.secrets())
    assert isinstance(error, MdeAuthenticationError)
    assert isinstance(error, MdeEntraConfigurationError) is (configuration and status == 400)
    assert is_configuration_error(error) is configuration
    assert error.status == status


def test_msal_refusing_the_authority_before_any_request_is_configuration(config):
    error = token_request_error(config, "Authentication failed: invalid authority", None, URL, (), ValueError("x"))
    assert isinstance(error, MdeEntraConfigurationError) and "extra tenant_id" in str(error)


def test_entras_description_is_redacted(config):
    said = f"AADSTS90002: tenant not found {config.client_secret}"
    error = token_request_error(config, "x", EntraAnswer("token", 400, "AADSTS90002", said), URL, config.secrets())
    assert config.client_secret not in str(error) + repr(error) and "tenant not found" in str(error)


def test_a_secret_remembered_once_is_stripped_from_every_later_message():
    remember_secrets(["remembered-Secret-7Qx", "short"])
    assert redact("a remembered-Secret-7Qx b") == "a *** b"
    assert redact("a short b") == "a short b"  # too short to strip from every message


def test_the_simulator_knob_is_validated():
    assert validate_runtime({"entra_400": {"endpoint": "token"}}) == {"entra_400": {"endpoint": "token", "code": None}}
    assert validate_runtime({"entra_400": None}) == {"entra_400": None}
    for bad in ({"endpoint": "jwks"}, {"endpoint": "token", "code": "90002"}, "token"):
        with pytest.raises(ValueError, match="entra_400"):
            validate_runtime({"entra_400": bad})


def test_a_certificate_azure_identity_cannot_load_is_configuration_naming_it(mde_make_config):
    from tests.unit.conftest import mde_self_signed_pem

    from mde_pipeline.api.credentials import build_credential
    from mde_pipeline.api.errors import MdeConfigurationError

    cert, key = mde_self_signed_pem(password=b"right-password-123")
    config = mde_make_config(password=None, certificate_data=(key + cert).decode(),
                             certificate_password="wrong-Password-456")  # fmt: skip
    with pytest.raises(MdeConfigurationError, match="certificate_path / certificate_data / certificate_password") as info:
        build_credential(config)
    assert "wrong-Password-456" not in str(info.value)
    with pytest.raises(MdeConfigurationError, match="extra tenant_id"):
        build_credential(mde_make_config(tenant_id="contoso tenant!"))
