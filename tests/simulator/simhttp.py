"""Helpers for the simulator's protocol tests: a verifying HTTPS session and token calls."""
from __future__ import annotations

import uuid

import requests

MDE_SCOPE = "https://api.securitycenter.microsoft.com/.default"


class Api:
    """Raw HTTP against one simulator, TLS verified against its ca.pem only."""

    def __init__(self, sim):
        self.sim = sim
        self.info = sim.info
        self.session = requests.Session()
        self.session.trust_env = False      # no proxies, no ambient CA bundle
        self.session.verify = sim.ca_bundle
        self._tokens = {}

    def close(self):
        self.session.close()

    def token_response(self, *, client_id=None, secret=None, tenant=None, scope=MDE_SCOPE,
                       **form):
        data = {"grant_type": "client_credentials",
                "client_id": client_id or self.info["client_id"],
                "client_secret": secret if secret is not None else self.info["client_secret"],
                "scope": scope, **form}
        data = {k: v for k, v in data.items() if v is not None}
        return self.session.post(
            f"{self.sim.base_url}/{tenant or self.info['tenant_id']}/oauth2/v2.0/token",
            data=data, timeout=10)

    def token(self, client_id=None, secret=None, fresh=False) -> str:
        key = (client_id, secret)
        if fresh or key not in self._tokens:
            response = self.token_response(client_id=client_id, secret=secret)
            assert response.status_code == 200, response.text
            self._tokens[key] = response.json()["access_token"]
        return self._tokens[key]

    def get(self, path, params=None, *, token=None, timeout=10, headers=None):
        """GET with a fresh request id (to find the call in /_sim/requests)."""
        request_id = str(uuid.uuid4())
        all_headers = {"x-ms-client-request-id": request_id, **(headers or {})}
        if token is not False:
            all_headers["Authorization"] = f"Bearer {token or self.token()}"
        response = self.session.get(self.sim.base_url + path, params=params,
                                    headers=all_headers, timeout=timeout)
        response.request_id = request_id
        return response

    def arrivals(self, responses) -> list[float]:
        """The server-side arrival times the limiter used for these responses."""
        by_id = {r["request_id"]: r["at"] for r in self.sim.requests()}
        return [by_id[r.request_id] for r in responses]

    def list_all(self, params=None):
        response = self.get("/api/alerts", {"$top": "10000", **(params or {})})
        assert response.status_code == 200, response.text
        return response.json()["value"]


def assert_mde_error(response, status, code=None):
    """The service's error body: {"error": {"code", "message", "target": <guid>}}."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "target"}
    uuid.UUID(error["target"])
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    return error
