"""Strings from the service in log lines: escaped and cut (common/log_text.py)."""

from __future__ import annotations

import logging

from mde_pipeline.api.fetch import fetch_batch_ips
from mde_pipeline.common.log_text import MAX_LOGGED_CHARS, for_log


def test_for_log_escapes_control_characters_and_quotes():
    assert for_log("a\nb\r\x1b[31mred\u2028") == "'a\\nb\\r\\x1b[31mred\\u2028'"
    assert "\n" not in for_log("x\ny") and "\x1b" not in for_log("\x1b")


def test_for_log_cuts_long_values_and_says_how_much():
    text = for_log("x" * 10_000)
    assert len(text) < MAX_LOGGED_CHARS + 40
    assert text.endswith(f"...<{10_002 - MAX_LOGGED_CHARS} more chars>")


class _Client:
    def __init__(self, answers):
        self.answers = answers

    def get_alert_ips(self, alert_id):
        return self.answers[alert_id]


def test_a_hostile_ip_value_cannot_forge_or_flood_the_fetch_log(caplog):
    hostile = "1.2.3.4\n2024-01-01 INFO forged line" + "A" * 1_000_000
    batch = {"alerts": [{"alert_id": "da1\r\nforged", "last_update_time": "2024-03-10T13:00:00Z"}]}
    with caplog.at_level(logging.WARNING):
        fetch_batch_ips(_Client({"da1\r\nforged": [hostile]}), batch)
    [message] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "\n" not in message and "\r" not in message
    assert len(message) < 2 * MAX_LOGGED_CHARS + 200
    assert message.startswith("alert 'da1\\r\\nforged': '1.2.3.4\\n2024-01-01 INFO forged line")
