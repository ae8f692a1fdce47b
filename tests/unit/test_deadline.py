"""request_deadline_seconds: one attempt ends within it, the whole body included, even when
every single read is quick (a trickling body never trips a read timeout)."""

from __future__ import annotations

import io
import json
import threading
import time

import pytest

from mde_pipeline.api.errors import MdeServerError

ALERT_ID = "da637984756812345678_-1234567890"
BODY = json.dumps({"value": [{"id": "10.0.0.1"}]}).encode()


class TricklingBody(io.RawIOBase):
    """A body served one byte per ``pause`` seconds; closing it ends the trickle."""

    def __init__(self, data: bytes, pause: float) -> None:
        self._data, self._pause, self._stopped = data, pause, threading.Event()
        self.served = 0

    def readable(self) -> bool:
        return True

    def read(self, amt: int = -1) -> bytes:
        if self.served >= len(self._data) or self._stopped.wait(self._pause):
            return b""
        self.served += 1
        return self._data[self.served - 1 : self.served]

    def close(self) -> None:
        self._stopped.set()
        super().close()


def trickled(pause: float):
    def step(request):
        body = TricklingBody(BODY, pause)
        return (200, {"Content-Type": "application/json", "Content-Length": str(len(BODY))}, body)

    return step


def test_a_trickling_body_fails_at_the_deadline_and_is_retried_within_retry_total(mde_scripted):
    # 1 byte per 0.05 s: the body would take ~2 s; the deadline is 0.3 s per attempt.
    api = mde_scripted(request_deadline_seconds=0.3, retry_total=1, retry_backoff_factor=0)
    api.script(trickled(0.05), trickled(0.05))
    started = time.monotonic()
    with pytest.raises(MdeServerError, match=r"request_deadline_seconds=0\.3"):
        api.client.get_alert_ips(ALERT_ID)
    assert len(api.urls) == 2  # first try + retry_total
    assert time.monotonic() - started < 1.5


def test_a_trickle_then_a_normal_answer_succeeds(mde_scripted):
    api = mde_scripted(request_deadline_seconds=0.3, retry_backoff_factor=0)
    api.script(trickled(0.05), (200, {}, BODY))
    assert api.client.get_alert_ips(ALERT_ID) == ["10.0.0.1"]
    assert len(api.urls) == 2


def test_a_slow_but_complete_body_within_the_deadline_is_kept(mde_scripted):
    api = mde_scripted(request_deadline_seconds=5)
    api.script(trickled(0.001))
    assert api.client.get_alert_ips(ALERT_ID) == ["10.0.0.1"]
    assert len(api.urls) == 1


def test_the_deadline_defaults_to_120_seconds(mde_make_config):
    assert mde_make_config().request_deadline_seconds == 120.0
