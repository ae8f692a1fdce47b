"""Fixtures of the MDE transport tests (hook, client, credentials, limiter).

Names start with ``mde_`` so they never collide with other helpers' fixtures.
"""

from __future__ import annotations

import datetime
import io
import json
import time
from collections import deque
from typing import Any, Callable

import pytest
import requests
import urllib3
from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.pipeline.transport import RequestsTransport
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

MDE_SECRET = "unit~Secret.abcdefghijklmnop0123"
MDE_TOKEN_PREFIX = "eyJ0eXAiOiJKV1QifQ.eyJ1bml0IjoidG9rZW4ifQ.unit-token-"
MDE_BASE = "https://mde.unit.test"
MDE_TARGET = "0c8f7d6e-5b4a-4392-8170-6f5e4d3c2b1a"


def mde_self_signed_pem(common_name: str = "unit-test", *, password: bytes | None = None) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) of a fresh self-signed RSA certificate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    encryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture
def mde_extra(tmp_path) -> dict[str, Any]:
    return {"tenant_id": "unit-tenant", "rate_limit_ledger_dir": str(tmp_path / "ledger"), "rate_limit_margin_seconds": 0.05}


@pytest.fixture
def mde_make_config(mde_extra):
    from mde_pipeline.api.config import MdeConnectionConfig

    def make(*, host: str | None = MDE_BASE, login: str | None = "unit-client", password: str | None = MDE_SECRET,
             **extra: Any):  # fmt: skip
        return MdeConnectionConfig.from_parts(host=host, login=login, password=password, extra={**mde_extra, **extra})

    return make


class MdeStaticCredential:
    """Stands in for Entra ID in unit tests (the simulator tests use azure-identity)."""

    def __init__(self) -> None:
        self.issued = 0
        self.tokens: list[str] = []
        self.closed = False

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        info = self.get_token_info(*scopes)
        return AccessToken(info.token, info.expires_on)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        self.issued += 1
        self.tokens.append(f"{MDE_TOKEN_PREFIX}{self.issued}")
        return AccessTokenInfo(self.tokens[-1], int(time.time()) + 3600)

    def close(self) -> None:
        self.closed = True


class MdeScriptedAdapter(requests.adapters.BaseAdapter):
    """A requests adapter answering from a script, so azure-core's RequestsTransport
    (and its error conversion) runs for real. Each step is an exception to raise, a
    callable(request) -> step, or (status, headers, body); body is bytes, JSON data or a
    file object (read as the body, e.g. one that trickles)."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: deque = deque()
        self.requests: list[requests.PreparedRequest] = []

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        self.requests.append(request)
        if not self.steps:
            raise AssertionError(f"unexpected request {request.method} {request.url}")
        step = self.steps.popleft()
        if callable(step) and not isinstance(step, type):
            step = step(request)
        if isinstance(step, BaseException):
            raise step
        status, headers, body = step
        if not isinstance(body, bytes) and not hasattr(body, "read"):
            body = json.dumps(body).encode()
        raw = urllib3.HTTPResponse(
            body=body if hasattr(body, "read") else io.BytesIO(body),  # a file object: a body read slowly
            headers=headers, status=status, preload_content=False, decode_content=False,
        )  # fmt: skip
        response = requests.Response()
        response.status_code = status
        response.headers = requests.structures.CaseInsensitiveDict(headers)
        response.raw = raw
        response.url = request.url
        response.request = request
        response.reason = "scripted"
        return response

    def close(self) -> None:
        pass


class MdeScriptedApi:
    """A client wired to a scripted adapter, a static credential and a fake clock."""

    def __init__(self, client, adapter: MdeScriptedAdapter, credential: MdeStaticCredential, clock) -> None:
        self.client = client
        self.adapter = adapter
        self.credential = credential
        self.clock = clock

    def script(self, *steps: Any) -> None:
        self.adapter.steps.extend(steps)

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self.adapter.requests]

    @property
    def auth_headers(self) -> list[str]:
        return [r.headers.get("Authorization", "") for r in self.adapter.requests]


@pytest.fixture
def mde_scripted(mde_make_config) -> Callable[..., MdeScriptedApi]:
    from mde_pipeline.api.client import MdeClient
    from tests.support.api_fakes import FakeClock, InMemoryLedger

    made: list[MdeScriptedApi] = []

    def make(*, ledger=None, clock=None, credential=None, **extra: Any) -> MdeScriptedApi:
        adapter = MdeScriptedAdapter()
        session = requests.Session()
        session.mount("https://", adapter)
        config = mde_make_config(**extra)
        clock = clock or FakeClock()
        credential = credential or MdeStaticCredential()
        client = MdeClient(
            config,
            credential=credential,
            clock=clock,
            ledger=ledger or InMemoryLedger(),
            transport=RequestsTransport(session=session, session_owner=False),
        )
        api = MdeScriptedApi(client, adapter, credential, clock)
        made.append(api)
        return api

    yield make
    for api in made:
        api.client.close()


@pytest.fixture
def mde_error_body() -> Callable[..., dict]:
    """The service's error body: {"error": {"code", "message", "target"}}."""

    def make(code: str, message: str, target: str = MDE_TARGET) -> dict:
        return {"error": {"code": code, "message": message, "target": target}}

    return make


@pytest.fixture
def mde_cert_pem() -> Callable[..., tuple[bytes, bytes]]:
    return mde_self_signed_pem
