"""Resolving the lake root: explicit arguments, Airflow Variables, defaults, bad roots."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mde_pipeline.lake import location as location_module
from mde_pipeline.lake.location import (
    DEFAULT_ROOT,
    LakeLocationError,
    parse_blob_root,
    resolve_lake_location,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_lake_variables(monkeypatch):
    monkeypatch.delenv("AIRFLOW_VAR_MDE_LAKE_ROOT", raising=False)
    monkeypatch.delenv("AIRFLOW_VAR_MDE_LAKE_CONN_ID", raising=False)


def test_default_root_is_the_repos_lake_folder():
    assert DEFAULT_ROOT == REPO / "lake"


def test_without_variable_the_default_root_is_used(no_lake_variables):
    location = resolve_lake_location()
    assert location.is_local and location.root == str(REPO / "lake")


def test_variable_from_the_environment_sets_the_root(no_lake_variables, monkeypatch, tmp_path):
    # Airflow's environment secrets backend: what Variable.get reads outside a task.
    monkeypatch.setenv("AIRFLOW_VAR_MDE_LAKE_ROOT", str(tmp_path / "from-variable"))
    assert resolve_lake_location().root == str(tmp_path / "from-variable")


@pytest.mark.slow
def test_variable_lookup_works_without_metadata_db_or_task_context(tmp_path):
    """A fresh process, an empty AIRFLOW_HOME, no DB: Variable.get must not explode."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow-home"), PYTHONPATH=str(REPO / "plugins"))
    code = (
        "import os, sys\n"
        "from mde_pipeline.lake.location import resolve_lake_location as resolve\n"
        "print(resolve().root)\n"
        "os.environ['AIRFLOW_VAR_MDE_LAKE_ROOT'] = 'file://' + sys.argv[1]\n"
        "print(resolve().root)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, f"{tmp_path}/env-lake"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(REPO / "lake"), f"{tmp_path}/env-lake"]
    assert not (tmp_path / "airflow-home" / "airflow.db").exists()


def test_conn_id_variable_and_default(no_lake_variables, monkeypatch):
    assert location_module.configured_lake_conn_id() == "mde_lake"
    monkeypatch.setenv("AIRFLOW_VAR_MDE_LAKE_CONN_ID", "lake_prod")
    assert location_module.configured_lake_conn_id() == "lake_prod"


def test_explicit_root_wins_over_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_VAR_MDE_LAKE_ROOT", "/somewhere/else")
    assert resolve_lake_location(tmp_path).root == str(tmp_path)


@pytest.mark.parametrize(
    "given",
    ["{tmp}/lake", "{tmp}/lake/", "file://{tmp}/lake", "file://localhost{tmp}/lake", "local://{tmp}/lake", "{tmp}/x/../lake"],
)
def test_local_root_forms(given, tmp_path):
    location = resolve_lake_location(given.format(tmp=tmp_path))
    assert location.is_local and location.protocol == "file"
    assert location.root == str(tmp_path / "lake")
    assert location.uri("alerts") == f"{tmp_path}/lake/alerts"
    assert location.table_glob("alert_ips") == f"{tmp_path}/lake/alert_ips/*/*.parquet"


def test_file_url_with_escapes(tmp_path):
    assert resolve_lake_location(f"file://{tmp_path}/my%20lake").root == str(tmp_path / "my lake")


def test_relative_and_home_paths_become_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert resolve_lake_location("rel/lake").root == str(tmp_path / "rel" / "lake")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_lake_location("~/lake").root == str(tmp_path / "home" / "lake")


@pytest.mark.parametrize(
    "root, message",
    [
        ("s3://bucket/lake", "unsupported lake root scheme 's3'"),
        ("gs://bucket/lake", "unsupported"),
        ("file://server/share/lake", "remote host"),
        ("   ", "empty"),
        ("abfs://Bad_Container@acct.dfs.core.windows.net/x", "invalid container name"),
        ("abfs://c@acct.example.com/x", "is not <account>.dfs.core.windows.net"),
        ("abfs://lake@acct.dfs.core.windows.net/a/../b", "'..'"),
        ("abfs://lake@acct.dfs.core.windows.net/x?sv=secret", "query"),
    ],
)
def test_bad_roots_are_clear_errors(root, message):
    with pytest.raises(LakeLocationError, match=message):
        resolve_lake_location(root, conn_id="unused")


def test_root_that_is_a_file_is_an_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(LakeLocationError, match="not a directory"):
        resolve_lake_location(tmp_path / "afile")


@pytest.mark.parametrize(
    "root, expected",
    [
        ("abfs://lake@acct1.dfs.core.windows.net/prefix/sub", ("abfs", "lake", "acct1", "prefix/sub")),
        ("abfss://lake@ACCT1.dfs.core.windows.net/", ("abfss", "lake", "acct1", "")),
        ("abfs://lake@acct1.blob.core.windows.net", ("abfs", "lake", "acct1", "")),
        ("abfs://lake@acct1.dfs.core.usgovcloudapi.net/p", ("abfs", "lake", "acct1", "p")),
        ("abfs://my-lake/p//q/", ("abfs", "my-lake", None, "p/q")),
    ],
)
def test_blob_roots_parse(root, expected):
    assert parse_blob_root(root) == expected


def test_lake_paths_refuse_traversal(tmp_path):
    location = resolve_lake_location(tmp_path)
    for bad in ("..", "a/../b", "", "./x"):
        with pytest.raises(LakeLocationError):
            location.path(bad)
    assert location.path("alerts/date=2024-01-01", "x.parquet") == f"{tmp_path}/alerts/date=2024-01-01/x.parquet"


def test_local_location_as_object_storage_path(tmp_path):
    path = resolve_lake_location(tmp_path).object_storage_path("alerts")
    assert path.protocol == "file" and path.path == f"{tmp_path}/alerts"


def test_missing_connection_is_a_clear_error(no_lake_variables):
    with pytest.raises(LakeLocationError, match="connection 'no_such_lake_conn'.*mde_lake_conn_id"):
        resolve_lake_location("abfs://lake@acct.dfs.core.windows.net/p", conn_id="no_such_lake_conn")


def test_error_texts_are_redacted():
    text = "bad: DefaultEndpointsProtocol=http;AccountName=a;AccountKey=c2VjcmV0a2V5==;BlobEndpoint=http://x?sv=1&sig=abc%2Fdef&se=2"
    redacted = location_module.redact(text)
    assert "c2VjcmV0a2V5" not in redacted and "abc%2Fdef" not in redacted
    assert "AccountKey=***" in redacted and "sig=***" in redacted and "AccountName=a" in redacted
