"""The azure-core policies of the MDE client's pipeline, one small piece each.

Pipeline, outermost first (a request runs down the list, the response back up)::

    HeadersPolicy            User-Agent, Accept (azure-core's own)
    MdeRetryPolicy           408/5xx, connection errors, read timeouts, a 404 that is not
                             the service's own: retry_total retries with exponential
                             backoff (a Retry-After honoured up to retry_backoff_max);
                             429: at most MAX_THROTTLE_RETRIES retries while the waits add
                             up to max_throttle_wait_seconds; TLS failures: never retried
    RefreshingBearerPolicy   token from azure-identity (cached, refreshed before expiry);
                             a 401 gets one re-send with a freshly fetched token;
                             token requests retry with TokenRetryPolicy (TLS: never)
    RateLimitPolicy          reserves a ledger slot for EVERY attempt (retries and
                             re-sends included), settles it when the attempt ends;
                             records a 429's wait in the ledger
    RequestLoggingPolicy     method, URL without secrets, status, attempt: never headers
    RequestsTransport        TLS verified against certifi + extra CAs (api/tls.py)

What azure-core's RetryPolicy does on its own (read in azure-core 1.41 source): it
honours Retry-After without a cap (``retry_backoff_max`` caps only the exponential
backoff), raises a bare ValueError on a garbage HTTP-date, retries any status >= 400
that carries Retry-After, counts a 429 against ``retry_status`` (3 by default) and
sleeps with ``time.sleep``; its ``timeout`` is an absolute deadline across all attempts
and sleeps (7 days by default). We subclass it so that (a) a 429 does not use up the
few status retries but its own small count and a time budget (max_throttle_wait_seconds,
default 3,900 s: more than the hourly window), (b) the 429's wait happens in the rate
limiter -- in the shared ledger, so every caller on the host waits, not only the one
that was throttled -- (c) every Retry-After is read by api/waits.py (never raises; an
implausible one is ignored) and a 5xx's is capped, and (d) 4xx other than 408/429 (and
a foreign 404) are never retried even with a Retry-After header.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import BearerTokenCredentialPolicy, HTTPPolicy, RequestHistory, RetryPolicy
from azure.core.pipeline.transport import HttpTransport

from mde_pipeline.api.errors import is_service_error_answer, safe_url
from mde_pipeline.api.rate_limiter import Clock, RateLimiter
from mde_pipeline.api.stats import ClientStats
from mde_pipeline.api.tls import is_tls_failure
from mde_pipeline.api.waits import RetryAfterReader, capped_server_wait

log = logging.getLogger(__name__)

# A service (or proxy) answering 429 forever, with "Retry-After: 0" or none at all,
# costs at most 1 + MAX_THROTTLE_RETRIES calls per API call, backing off 2, 4, 8, ...
# seconds (api/waits.py), not 100 calls a second apart.
MAX_THROTTLE_RETRIES = 6
# Where RateLimitPolicy leaves a 429's wait and count for MdeRetryPolicy (one request).
THROTTLE_WAIT = "mde_throttle_wait"
THROTTLES = "mde_throttles"


class MdeRetryPolicy(RetryPolicy):
    """azure-core's RetryPolicy with a count and time budget for 429s, capped and safely
    read Retry-After waits, and a sleep through the clock seam."""

    def __init__(self, *, clock: Clock, stats: ClientStats, max_throttle_wait_seconds: float,
                 retry_after: RetryAfterReader, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self._clock = clock
        self._stats = stats
        self._retry_after = retry_after
        self.max_throttle_wait_seconds = max_throttle_wait_seconds

    def configure_retries(self, options: dict[str, Any]) -> dict[str, Any]:
        settings = super().configure_retries(options)
        settings["throttle_wait"] = 0.0
        settings["throttle_retries"] = 0
        return settings

    def is_retry(self, settings: dict[str, Any], response: PipelineResponse) -> bool:
        status = response.http_response.status_code
        if status == 429:
            delay = self._throttle_wait(settings, response)
            return (
                settings["throttle_wait"] + delay <= self.max_throttle_wait_seconds
                and settings["throttle_retries"] < MAX_THROTTLE_RETRIES
            )
        if status == 404 and not is_service_error_answer(response.http_response):
            # Not the service's "no such alert" (a proxy's HTML page, an empty body): maybe a
            # hiccup, so retried like a 5xx within retry_total, then an error (never "gone").
            return settings["total"] > 0
        if status < 500 and status != 408:
            return False  # azure-core would retry any 4xx carrying Retry-After
        return super().is_retry(settings, response)

    def increment(self, settings: dict[str, Any], response=None, error=None) -> bool:
        if error is not None and is_tls_failure(error):
            return False  # an untrusted certificate stays untrusted: a configuration error
        if error is None and isinstance(response, PipelineResponse) and response.http_response.status_code == 429:
            # Throttling spends the time budget, not the retry count.
            settings["throttle_wait"] += self._throttle_wait(settings, response)
            settings["throttle_retries"] += 1
            settings["history"].append(RequestHistory(response.http_request, http_response=response.http_response))
            return True
        return super().increment(settings, response=response, error=error)

    def _throttle_wait(self, settings: dict[str, Any], response: PipelineResponse) -> float:
        # RateLimitPolicy already judged this 429 (and wrote its wait to the ledger).
        wait = response.context.get(THROTTLE_WAIT)
        if wait is None:
            wait = self._retry_after.throttle_wait(response.http_response, settings["throttle_retries"] + 1)
        return wait

    def sleep(self, settings: dict[str, Any], transport: HttpTransport, response: PipelineResponse | None = None) -> None:
        if response is not None and response.http_response.status_code == 429:
            return  # RateLimitPolicy put the wait in the ledger; the next reservation waits it out
        delay = self.get_backoff_time(settings)
        if response is not None:
            # A 503 asking for an hour would hold a pool slot an hour per retry: its
            # Retry-After is honoured only up to retry_backoff_max.
            retry_after = self._retry_after.read(response.http_response)
            delay = capped_server_wait(retry_after, delay, cap=self.backoff_max)
        if delay > 0:
            self._clock.sleep(delay)
            self._stats.add(wait_seconds=delay)


class TokenRetryPolicy(RetryPolicy):
    """azure-identity's retry policy for token requests (the connection's retry knobs)
    with MdeRetryPolicy's TLS rule: an authority whose certificate is not trusted is not
    asked again (retry_total times, with backoff): it stays untrusted, a configuration error."""

    def increment(self, settings: dict[str, Any], response=None, error=None) -> bool:
        if error is not None and is_tls_failure(error):
            return False
        return super().increment(settings, response=response, error=error)


class RefreshingBearerPolicy(BearerTokenCredentialPolicy):
    """BearerTokenCredentialPolicy plus one re-send after a 401 with a *fresh* token.

    A 401 means the service rejected a token our cache still thinks valid (revoked,
    clock skew, signing-key rollover). MSAL refuses ``force_refresh`` for app tokens,
    so a new credential (empty cache) fetches a new token. A second 401 is returned
    as is and becomes MdeAuthenticationError.
    """

    def __init__(self, credential: TokenCredential, *scopes: str, fresh_credential: Callable[[], TokenCredential] | None):
        super().__init__(credential, *scopes)
        self._fresh_credential = fresh_credential
        self._credential_lock = threading.Lock()

    @property
    def credential(self) -> TokenCredential:
        return self._credential

    def send(self, request: PipelineRequest) -> PipelineResponse:
        self.on_request(request)
        response = self.next.send(request)
        if response.http_response.status_code != 401 or self._fresh_credential is None:
            return response
        log.info("MDE API answered 401; fetching a new token and sending once more")
        with self._credential_lock:
            stale, self._credential = self._credential, self._fresh_credential()
            self._token = None
        close_quietly(stale)
        self.on_request(request)
        return self.next.send(request)


class RateLimitPolicy(HTTPPolicy):
    """Every attempt reserves a slot first; a 429 blocks the shared budget."""

    def __init__(self, limiter: RateLimiter, stats: ClientStats, retry_after: RetryAfterReader) -> None:
        super().__init__()
        self._limiter = limiter
        self._stats = stats
        self._retry_after = retry_after

    def send(self, request: PipelineRequest) -> PipelineResponse:
        slot = self._limiter.acquire()
        attempt = request.context.get("mde_attempt", 0) + 1
        request.context["mde_attempt"] = attempt
        self._stats.add(calls=1, retries=int(attempt > 1), wait_seconds=slot.waited_seconds)
        try:
            response = self.next.send(request)
        finally:
            self._limiter.settle(slot)  # the request arrived before now, whatever happened
        if response.http_response.status_code == 429:
            throttles = request.context[THROTTLES] = request.context.get(THROTTLES, 0) + 1
            # Usable Retry-After, at least the backoff; an implausible one is never written.
            delay = request.context[THROTTLE_WAIT] = self._retry_after.throttle_wait(response.http_response, throttles)
            self._limiter.record_throttle(delay)
            self._stats.add(throttled=1)
            log.warning(
                "MDE API throttled %s (429, %d for this call); every caller of this budget waits %.1fs",
                safe_url(request.http_request.url),
                throttles,
                delay,
            )
        return response


class RequestLoggingPolicy(HTTPPolicy):
    """One line per attempt: method, URL (OData query only), status, duration, attempt.
    Never headers or bodies (the Authorization header carries the token)."""

    def send(self, request: PipelineRequest) -> PipelineResponse:
        started = time.monotonic()
        url = safe_url(request.http_request.url)
        attempt = request.context.get("mde_attempt", 1)
        try:
            response = self.next.send(request)
        except AzureError as exc:
            log.warning("%s %s failed on attempt %d: %s", request.http_request.method, url, attempt, type(exc).__name__)
            raise
        status = response.http_response.status_code
        level = logging.DEBUG if status < 400 or status == 404 else logging.WARNING
        log.log(level, "%s %s -> %d in %.2fs (attempt %d)", request.http_request.method, url, status,
                time.monotonic() - started, attempt)  # fmt: skip
        return response


def close_quietly(resource: Any) -> None:
    close = getattr(resource, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # closing a stale credential must not fail a call
            log.debug("closing %s failed", type(resource).__name__, exc_info=True)


# --------------------------------------------------------------------------- client