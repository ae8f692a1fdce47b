"""An overall deadline per attempt, the whole body included.

Why: requests' read timeout applies to each read from the socket, so a server (or a
proxy) that trickles its body a few bytes at a time never times out; one call could
hold a pool slot for hours. ``request_deadline_seconds`` (default 120 s) bounds every
attempt from its start to the last byte of the body.

How: :class:`DeadlinePolicy` (the innermost policy, next to the transport) starts a
clock when an attempt starts and hands requests a response hook. requests runs the hook
once the status line and headers are in, *before* it reads the body (``stream=False``);
the hook arms a timer for what is left of the deadline. If the timer fires while the
body is still being read, it shuts the socket down, which ends the blocked read at once;
the attempt then fails with :class:`DeadlineExceededError` (a read timeout for
azure-core: retried within ``retry_total``, then ``MdeServerError``). Connect and the
headers are bounded by the connect and read timeouts (both below the default deadline).

The same hook caps the body: one over ``max_body_bytes`` (by its Content-Length, or
counted while it streams in) stops being read at once and is an
:class:`~mde_pipeline.api.errors.MdeMalformedResponseError`, so a hostile or broken
answer never fills the worker's memory. The client then checks each endpoint's own,
smaller cap on the body it got.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from azure.core.exceptions import AzureError, ServiceResponseTimeoutError
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import HTTPPolicy

from mde_pipeline.api.errors import MdeMalformedResponseError

log = logging.getLogger(__name__)


class DeadlineExceededError(ServiceResponseTimeoutError):
    """An attempt passed request_deadline_seconds before its body was complete."""


class _Watchdog:
    """One attempt's timer: armed by requests' response hook, cancelled when it ends."""

    def __init__(self, seconds: float, max_body_bytes: int | None = None) -> None:
        self.seconds = seconds
        self.max_body_bytes = max_body_bytes
        self.started = time.monotonic()
        self.fired = threading.Event()
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def arm(self, response: Any, *args: Any, **kwargs: Any) -> None:
        """requests' "response" hook: headers are in, the body is not read yet."""
        if self.max_body_bytes is not None:
            _cap_body(response, self.max_body_bytes)
        remaining = self.seconds - (time.monotonic() - self.started)
        with self._lock:
            if remaining <= 0:
                self._fire(response)
                return
            self._timer = threading.Timer(remaining, self._fire, (response,))
            self._timer.daemon = True
            self._timer.start()

    def _fire(self, response: Any) -> None:
        self.fired.set()
        raw = getattr(response, "raw", None)
        sock = getattr(getattr(raw, "connection", None), "sock", None)
        try:
            if sock is not None:
                # shutdown, not close: it wakes the thread blocked in recv() on this socket.
                sock.shutdown(socket.SHUT_RDWR)
            elif raw is not None:
                raw.close()  # a body without a socket (test doubles): stop it reading
        except (OSError, ValueError):
            log.debug("stopping a response past its deadline failed", exc_info=True)

    def cancel(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()


def _cap_body(response: Any, limit: int) -> None:
    """Refuse a body over ``limit`` bytes before or while requests reads it."""

    def too_large(size: str) -> MdeMalformedResponseError:
        return MdeMalformedResponseError(f"response body of {size} bytes is over the {limit}-byte cap")

    length = (getattr(response, "headers", None) or {}).get("Content-Length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large(length)
    raw = getattr(response, "raw", None)
    stream = getattr(raw, "stream", None)
    if stream is None:
        return

    def capped(*args: Any, **kwargs: Any):
        seen = 0
        for chunk in stream(*args, **kwargs):
            seen += len(chunk)
            if seen > limit:
                raw.close()
                raise too_large(f"more than {seen}")
            yield chunk

    raw.stream = capped


class DeadlinePolicy(HTTPPolicy):
    """Every attempt ends within ``seconds`` of its start and ``max_body_bytes``, body
    included (module docstring)."""

    def __init__(self, seconds: float, max_body_bytes: int | None = None) -> None:
        super().__init__()
        self.seconds = seconds
        self.max_body_bytes = max_body_bytes

    def send(self, request: PipelineRequest) -> PipelineResponse:
        watchdog = _Watchdog(self.seconds, self.max_body_bytes)
        # Transport options reach requests' Session.request: a per-attempt response hook.
        request.context.options["hooks"] = {"response": [watchdog.arm]}
        try:
            response = self.next.send(request)
        except AzureError:
            if watchdog.fired.is_set():
                raise self._exceeded() from None
            raise
        finally:
            watchdog.cancel()
            request.context.options.pop("hooks", None)
        if watchdog.fired.is_set():
            raise self._exceeded()  # a body cut short without an error is no answer either
        return response

    def _exceeded(self) -> DeadlineExceededError:
        return DeadlineExceededError(f"no complete answer within request_deadline_seconds={self.seconds:g}")
