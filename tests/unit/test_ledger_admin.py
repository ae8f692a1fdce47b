"""python -m mde_pipeline.api.ledger_admin: show and clear the ledger's throttle blocks."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

from mde_pipeline.api.ledger_admin import main
from mde_pipeline.api.ledgers import LEDGER_FILE_NAME, SqliteLedger

REPO = Path(__file__).resolve().parents[2]


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out), out.getvalue()


def test_show_lists_active_blocks_and_clear_removes_them(tmp_path):
    ledger = SqliteLedger(tmp_path / LEDGER_FILE_NAME)
    ledger.block_until("tenant:app", time.time() + 600)
    ledger.block_until("tenant:other", time.time() + 1e12)  # absurd, written before the cap
    ledger.block_until("tenant:old", time.time() - 5)  # expired: not shown
    code, text = run("show", "--ledger-dir", str(tmp_path))
    assert code == 0
    assert "tenant:app  blocked until" in text and "tenant:other" in text and "tenant:old" not in text
    code, text = run("clear", "--ledger-dir", str(tmp_path), "--key", "TENANT:APP")
    assert (code, text.split(" from ")[0]) == (0, "removed 1 throttle block(s)")
    assert set(ledger.blocks()) == {"tenant:other", "tenant:old"}
    run("clear", "--ledger-dir", str(tmp_path))
    assert ledger.blocks() == {}
    assert run("show", "--ledger-dir", str(tmp_path))[1].startswith("no active throttle block")


def test_default_dir_and_a_missing_ledger(tmp_path, monkeypatch):
    monkeypatch.setenv("MDE_RATE_LIMIT_LEDGER_DIR", str(tmp_path / "none"))
    assert run("show") == (0, f"no ledger at {tmp_path / 'none' / LEDGER_FILE_NAME}\n")
    assert run("clear")[0] == 1


def test_runs_as_a_module_without_airflow(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins"), "MDE_RATE_LIMIT_LEDGER_DIR": str(tmp_path)}
    SqliteLedger(tmp_path / LEDGER_FILE_NAME).block_until("t:c", time.time() + 60)
    done = subprocess.run([sys.executable, "-m", "mde_pipeline.api.ledger_admin", "show"],
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert "t:c  blocked until" in done.stdout, done.stderr


def test_a_shared_redis_ledger_is_shown_and_cleared_by_url_without_its_password(tmp_path):
    from mde_pipeline.api.redis_ledger import RedisLedger
    from local_redis import PASSWORD, RedisServer

    with RedisServer(tmp_path / "redis") as server:
        ledger = RedisLedger(server.url)
        ledger.block_until("tenant:app", time.time() + 600)
        code, text = run("show", "--ledger", server.url)
        assert code == 0 and "tenant:app  blocked until" in text and PASSWORD not in text
        code, text = run("clear", "--ledger", server.url, "--key", "tenant:app")
        assert code == 0 and "removed 1 throttle block(s)" in text and PASSWORD not in text
        assert ledger.blocks() == {}
        ledger.close()
