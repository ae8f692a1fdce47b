"""MdeClient: one method per MDE API call, on an azure-core pipeline (api/policies.py).

The client owns its pipeline, credential, rate limiter and stats; it validates alert
ids before they reach a URL, parses answers strictly, and translates every failure into
a typed error of :mod:`mde_pipeline.api.errors` that carries no secret.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import quote, urlsplit

from azure.core import PipelineClient
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.policies import HeadersPolicy
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest import HttpRequest

from mde_pipeline import __version__
from mde_pipeline.api.config import MdeConnectionConfig
from mde_pipeline.api.credentials import build_credential, credential_factory, transport_for
from mde_pipeline.api.entra_answers import EntraAnswers, token_request_error
from mde_pipeline.api.deadline import DeadlineExceededError, DeadlinePolicy
from mde_pipeline.api.errors import (
    InvalidAlertIdError,
    MdeApiError,
    MdeMalformedResponseError,
    MdeServerError,
    MdeTrustError,
    error_from_response,
    is_service_error_answer,
    redact,
    safe_url,
)
from mde_pipeline.api.ledger_backends import open_ledger
from mde_pipeline.api.ledgers import Ledger
from mde_pipeline.api.policies import (
    MdeRetryPolicy,
    RateLimitPolicy,
    RefreshingBearerPolicy,
    RequestLoggingPolicy,
    close_quietly,
)
from mde_pipeline.api.rate_limiter import Clock, RateLimiter, SystemClock
from mde_pipeline.api.stats import ClientStats
from mde_pipeline.api.tls import is_tls_failure, trust_bundle, trust_sources_text
from mde_pipeline.api.tenant_resolution import token_tenant_id
from mde_pipeline.api.waits import RetryAfterReader
from mde_pipeline.common.tenant_ids import offline_tenant_id

log = logging.getLogger(__name__)

USER_AGENT = f"mde-alert-ips-airflow/{__version__}"
MAX_TOP = 10_000
ALERT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


# Response bodies larger than these are refused (a page of 10,000 alerts is ~30 MB;
# an alert's IPs a few KB).
MAX_PAGE_BYTES = 64 * 1024 * 1024
MAX_IPS_BYTES = 1024 * 1024


def parse_json_body(body: bytes, url: str, limit: int) -> Any:
    """The JSON of a response body, or MdeMalformedResponseError: over ``limit`` bytes,
    not UTF-8 JSON, NaN/Infinity, or nested too deeply (never a bare RecursionError)."""

    def refuse_constant(name: str) -> None:
        raise ValueError(f"non-JSON constant {name}")

    if len(body) > limit:
        raise MdeMalformedResponseError(f"response body of {len(body)} bytes is over the {limit}-byte cap", request_url=url)
    try:
        document = json.loads(body.decode("utf-8"), parse_constant=refuse_constant)
        # JSON may escape half a surrogate pair ("\ud800"): valid JSON, but text no UTF-8
        # writer (staging, Parquet, the fetch cache) can store. It becomes U+FFFD, as a
        # UTF-8 decoder would make of it, so one odd field never blocks a listing.
        return _without_lone_surrogates(document) if b"\\ud" in body.lower() else document
    except RecursionError:
        raise MdeMalformedResponseError(f"response JSON is nested too deeply ({len(body)} bytes)", request_url=url) from None
    except (UnicodeDecodeError, ValueError):
        raise MdeMalformedResponseError(f"response body is not valid JSON ({len(body)} bytes)", request_url=url) from None


def _without_lone_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if isinstance(value, list):
        return [_without_lone_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {_without_lone_surrogates(k): _without_lone_surrogates(v) for k, v in value.items()}
    return value


def validate_alert_id(alert_id: object) -> str:
    """The id if it looks like an MDE alert id; never one that could alter a path."""
    if not isinstance(alert_id, str) or not ALERT_ID_PATTERN.fullmatch(alert_id) or ".." in alert_id:
        shown = repr(alert_id)[:80]
        raise InvalidAlertIdError(
            f"refusing alert id {shown}: expected 1-128 characters of letters, digits, '_', '-', '.'"
        )
    return alert_id


_ODATA_SAFE = "$',():-."


def _odata_query(params: list[tuple[str, str]]) -> str:
    # Spaces as %20 (not '+'), OData punctuation kept readable.
    return "&".join(f"{key}={quote(value, safe=_ODATA_SAFE)}" for key, value in params)


class MdeClient:
    """Calls the MDE API for one connection (one tenant, one budget).

    Thread-safe for concurrent calls; close() when done (or use as a context manager).
    """

    def __init__(
        self,
        config: MdeConnectionConfig,
        *,
        credential: TokenCredential | None = None,
        clock: Clock | None = None,
        ledger: Ledger | None = None,
        transport: HttpTransport | None = None,
        background: bool = False,
    ) -> None:
        """``background``: this client works for a backfill run; its calls leave the
        hourly loads their reserve of the budget (api/backfill_reserve.py)."""
        self.config = config
        self.stats = ClientStats()
        self._tenant_id = offline_tenant_id(config.tenant_id)  # a domain name: from the token's tid
        self._clock = clock or SystemClock()
        # An injected ledger (tests, benchmarks) is not ours to close.
        self._owned_ledger = None if ledger is not None else open_ledger(
            config.rate_limit_ledger, config.rate_limit_ledger_dir, ca_file=trust_bundle(config.ca_bundle)
        )
        ledger = ledger or self._owned_ledger
        self.limiter = RateLimiter(
            config.rate_limits,
            key=config.budget_key,
            ledger=ledger,
            clock=self._clock,
            margin_seconds=config.rate_limit_margin_seconds,
            share=config.rate_limit_share,
            max_blocked_wait=config.max_throttle_wait_seconds,
            background=background,
            scheduled_reserve_share=config.scheduled_reserve_share,
        )
        # What Entra answered our credential's requests: a 400 is configuration, not bad luck.
        self._entra_answers = EntraAnswers()
        # An injected credential is not ours to rebuild; ours is rebuilt on a 401.
        fresh = None if credential is not None else credential_factory(config, self._entra_answers)
        self._auth_policy = RefreshingBearerPolicy(
            credential or build_credential(config, answers=self._entra_answers), config.endpoints.scope,
            fresh_credential=fresh,
        )
        # One reader per client: it logs an implausible Retry-After once per client.
        self._retry_after = RetryAfterReader(
            self._clock.now,
            longest_seconds=self.limiter.max_block_seconds,
            first_backoff=config.throttle_backoff_seconds,
            backoff_cap=config.retry_backoff_max,
        )
        retries = config.retry_total
        policies = [
            HeadersPolicy({"User-Agent": USER_AGENT, "Accept": "application/json"}),
            MdeRetryPolicy(
                clock=self._clock,
                stats=self.stats,
                max_throttle_wait_seconds=config.max_throttle_wait_seconds,
                retry_after=self._retry_after,
                retry_total=retries,
                retry_connect=retries,
                retry_read=retries,
                retry_status=retries,
                retry_backoff_factor=config.retry_backoff_factor,
                retry_backoff_max=config.retry_backoff_max,
            ),
            self._auth_policy,
            RateLimitPolicy(self.limiter, self.stats, self._retry_after),
            RequestLoggingPolicy(),
            DeadlinePolicy(config.request_deadline_seconds, max_body_bytes=MAX_PAGE_BYTES),
        ]
        self._pipeline_client = PipelineClient(
            config.api_base_url, policies=policies, transport=transport or transport_for(config)
        )

    @property
    def tenant_id(self) -> str:
        """The canonical tenant (lower-case GUID): the lake partition, the rows' tenant_id.

        Extra ``tenant_id`` lower-cased when it is a GUID; a verified domain name is resolved
        once from the ``tid`` claim of the access token the calls use anyway (the credential
        caches it, so this costs no extra token request)."""
        if self._tenant_id is None:
            self._tenant_id = token_tenant_id(self._auth_policy.credential, self.config)
        return self._tenant_id

    def __enter__(self) -> "MdeClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._pipeline_client.close()
        close_quietly(self._auth_policy.credential)
        if self._owned_ledger is not None:
            self._owned_ledger.close()

    def __repr__(self) -> str:
        return f"MdeClient(api={self.config.api_base_url!r}, tenant_id={self.config.tenant_id!r})"

    # ------------------------------------------------------------------ API calls

    def list_alerts_page(
        self,
        *,
        filter: str | None,
        top: int,
        skip: int = 0,
        orderby: str | None = "lastUpdateTime asc",
        expand: str | None = None,
    ) -> dict:
        """One GET /api/alerts page: the parsed JSON, ``value`` checked to be a list of
        objects; may hold ``@odata.nextLink``."""
        if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= MAX_TOP:
            raise ValueError(f"top must be an integer between 1 and {MAX_TOP}, got {top!r}")
        if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
            raise ValueError(f"skip must be an integer >= 0, got {skip!r}")
        params: list[tuple[str, str]] = []
        if filter:
            params.append(("$filter", filter))
        if orderby:
            params.append(("$orderby", orderby))
        params.append(("$top", str(top)))
        if skip:
            params.append(("$skip", str(skip)))
        if expand:
            params.append(("$expand", expand))
        url = f"{self.config.api_base_url}/api/alerts?{_odata_query(params)}"
        return self._alerts_page(self._get(url), url)

    def get_next_link(self, url: str) -> dict:
        """Follow an ``@odata.nextLink``: only to the API's own scheme, host and port."""
        if not isinstance(url, str):
            raise MdeMalformedResponseError("@odata.nextLink is not a string")
        link, base = urlsplit(url), urlsplit(self.config.api_base_url)
        if (link.scheme.lower(), link.netloc.lower()) != (base.scheme, base.netloc) or not link.path.startswith("/api/"):
            raise MdeMalformedResponseError(
                "refusing @odata.nextLink outside the API base URL (the bearer token would go elsewhere)",
                request_url=f"{link.scheme}://{link.netloc}{link.path}",
            )
        return self._alerts_page(self._get(url), url)

    def get_alert_ips(self, alert_id: str) -> list[str] | None:
        """The raw ``id`` strings of GET /api/alerts/{id}/ips; None if the alert is gone: a
        404 carrying the service's own error JSON. Any other 404 (HTML from a proxy, an
        empty body, a wrong host) raises MdeUnexpectedNotFoundError after retry_total retries."""
        url = f"{self.config.api_base_url}/api/alerts/{quote(validate_alert_id(alert_id), safe='')}/ips"
        body = self._get(url, not_found_ok=True)
        if body is None:
            return None
        document = self._json(body, url, MAX_IPS_BYTES)
        values = self._value_list(document, url)
        ips = []
        for index, item in enumerate(values):
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise MdeMalformedResponseError(
                    f"ips value[{index}] is not an object with a string 'id': {str(item)[:80]!r}", request_url=url
                )
            ips.append(item["id"])
        return ips

    # ------------------------------------------------------------------ plumbing

    def _alerts_page(self, body: bytes | None, url: str) -> dict:
        document = self._json(body or b"", url)
        values = self._value_list(document, url)
        for index, item in enumerate(values):
            if not isinstance(item, dict):
                raise MdeMalformedResponseError(f"alerts value[{index}] is not an object", request_url=url)
        link = document.get("@odata.nextLink")
        if link is not None and not isinstance(link, str):
            raise MdeMalformedResponseError("@odata.nextLink is not a string", request_url=url)
        return document

    @staticmethod
    def _json(body: bytes, url: str, limit: int = MAX_PAGE_BYTES) -> Any:
        return parse_json_body(body, url, limit)

    @staticmethod
    def _value_list(document: Any, url: str) -> list:
        if not isinstance(document, dict) or not isinstance(document.get("value"), list):
            raise MdeMalformedResponseError("response JSON has no 'value' list", request_url=url)
        return document["value"]

    def _get(self, url: str, *, not_found_ok: bool = False) -> bytes | None:
        request = HttpRequest("GET", url)
        secrets = self.config.secrets()
        self._entra_answers.forget()
        try:
            response = self._pipeline_client.send_request(request)
        except MdeApiError as exc:  # raised inside the pipeline (the limiter)
            if exc.request_url is None:
                exc.request_url = safe_url(url)
            raise
        except ClientAuthenticationError as exc:
            if is_tls_failure(exc):
                raise MdeTrustError(
                    f"TLS verification failed for the token authority {self.config.endpoints.authority_host}: "
                    f"its certificate is not trusted by {trust_sources_text(self.config.ca_bundle)} (add its CA "
                    "with REQUESTS_CA_BUNDLE or extra ca_bundle; verification stays on)"
                ) from None
            raise token_request_error(self.config, str(exc.message or exc), self._entra_answers.last(), url,
                                      secrets, exc.__cause__) from None  # fmt: skip
        except DeadlineExceededError:
            raise MdeServerError(
                f"MDE API gave no complete answer within request_deadline_seconds="
                f"{self.config.request_deadline_seconds:g} (a body trickling in?) (retry_total={self.config.retry_total})",
                request_url=url,
            ) from None
        except (ServiceRequestTimeoutError, ServiceResponseTimeoutError) as exc:
            kind = "connect" if isinstance(exc, ServiceRequestTimeoutError) else "read"
            raise MdeServerError(
                f"MDE API timed out ({kind} timeout; connect {self.config.connect_timeout:g}s, "
                f"read {self.config.read_timeout:g}s) (retry_total={self.config.retry_total})",
                request_url=url,
            ) from None
        except ServiceRequestError as exc:
            if is_tls_failure(exc):
                raise MdeTrustError(
                    f"TLS verification failed for {urlsplit(url).netloc}: the server certificate is not "
                    f"trusted by {trust_sources_text(self.config.ca_bundle)} (add its CA with REQUESTS_CA_BUNDLE "
                    "or extra ca_bundle; verification stays on)"
                ) from None
            raise MdeServerError(
                f"could not connect to the MDE API (retry_total={self.config.retry_total}): "
                f"{redact(str(exc), secrets)[:300]}",
                request_url=url,
            ) from None
        except ServiceResponseError as exc:
            raise MdeServerError(
                f"MDE API connection dropped before a complete response "
                f"(retry_total={self.config.retry_total}): {redact(str(exc), secrets)[:300]}",
                request_url=url,
            ) from None
        except AzureError as exc:
            raise MdeServerError(
                f"MDE API call failed: {type(exc).__name__}: {redact(str(exc), secrets)[:300]}", request_url=url
            ) from None

        status = response.status_code
        if 200 <= status < 300:
            return response.content
        if status == 404 and not_found_ok and is_service_error_answer(response):
            return None
        retry_after = self._retry_after.read(response).seconds if status == 429 else None
        raise error_from_response(status, response.content, url, retry_after=retry_after, secrets=secrets,
                                  content_type=response.headers.get("Content-Type"))  # fmt: skip