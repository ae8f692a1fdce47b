"""bench/status_page.py on a tiny lake: it builds, serves and times the status (figures not asserted)."""

from __future__ import annotations

from bench import status_page


def test_status_page_bench_runs_on_a_small_lake(tmp_path, monkeypatch, capsys):
    for name in ("AIRFLOW_HOME", "AIRFLOW_VAR_MDE_LAKE_ROOT", "AIRFLOW_CONN_MDE_DEFAULT"):
        monkeypatch.setenv(name, "")  # the bench sets them; monkeypatch restores them
    assert status_page.main(["--days", "2", "--alerts-per-day", "48", "--ips-per-alert", "2", "--repeats", "1",
                             "--keep", str(tmp_path / "bench")]) == 0
    out = capsys.readouterr().out
    assert "GET /mde/api/status warm" in out and "lake: 2 days" in out
