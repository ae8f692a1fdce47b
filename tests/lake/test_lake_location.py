"""Resolving the lake root: local roots, blob roots through a filesystem factory, bad roots.

(Variables and the Airflow-built abfs filesystem: the Airflow face, mde_pipeline.airflow.)
"""

from __future__ import annotations

import pytest

from mde_pipeline.common.redaction import redact
from mde_pipeline.lake.location import (
    LakeLocationError,
    parse_blob_root,
    resolve_lake_location,
)


class FakeBlobFs:
    def __init__(self, account_name=None, connection_string=None):
        self.account_name, self.connection_string = account_name, connection_string


def test_a_root_is_required():
    with pytest.raises(LakeLocationError, match="no lake root"):
        resolve_lake_location(None)


def test_blob_root_without_a_filesystem_factory_is_a_clear_error():
    with pytest.raises(LakeLocationError, match="filesystem factory"):
        resolve_lake_location("abfs://lake@acct.dfs.core.windows.net/p", conn_id="mde_lake")


def test_blob_root_gets_its_filesystem_from_the_factory():
    calls = []

    def factory(protocol, root, conn_id):
        calls.append((protocol, root, conn_id))
        return FakeBlobFs(account_name="ACCT")

    location = resolve_lake_location("abfss://lake@acct.dfs.core.windows.net/a/b", "lake_conn", blob_filesystem=factory)
    assert calls == [("abfss", "lake/a/b", "lake_conn")]
    assert (location.protocol, location.root, location.conn_id, location.account_name) == ("abfs", "lake/a/b", "lake_conn", "acct")
    assert location.uri("alerts") == "abfs://lake/a/b/alerts"


def test_blob_root_naming_another_account_than_the_connection_is_refused():
    def factory(protocol, root, conn_id):
        return FakeBlobFs(connection_string="AccountName=other;AccountKey=x")

    with pytest.raises(LakeLocationError, match="names storage account 'acct'.*'other'"):
        resolve_lake_location("abfs://lake@acct.dfs.core.windows.net/p", "c", blob_filesystem=factory)


def test_failing_factory_is_a_clear_redacted_error():
    def factory(protocol, root, conn_id):
        raise RuntimeError("no connection: AccountKey=c2VjcmV0a2V5==")

    with pytest.raises(LakeLocationError, match="connection 'no_such_lake_conn'") as caught:
        resolve_lake_location("abfs://lake@acct.dfs.core.windows.net/p", conn_id="no_such_lake_conn", blob_filesystem=factory)
    assert "c2VjcmV0a2V5" not in str(caught.value) and "AccountKey=***" in str(caught.value)


@pytest.mark.parametrize(
    "given",
    ["{tmp}/lake", "{tmp}/lake/", "file://{tmp}/lake", "file://localhost{tmp}/lake", "local://{tmp}/lake", "{tmp}/x/../lake"],
)
def test_local_root_forms(given, tmp_path):
    location = resolve_lake_location(given.format(tmp=tmp_path))
    assert location.is_local and location.protocol == "file"
    assert location.root == str(tmp_path / "lake")
    assert location.uri("alerts") == f"{tmp_path}/lake/alerts"
    assert location.table_glob("alert_ips") == f"{tmp_path}/lake/alert_ips/tenant_id=*/*/*.parquet"


def test_a_tenants_location_puts_the_tenant_level_below_each_top_folder(tmp_path):
    root = resolve_lake_location(tmp_path / "lake")
    tenant = root.for_tenant("72f988bf-86f1-41af-91ab-2d7cd011db47")
    level = "tenant_id=72f988bf-86f1-41af-91ab-2d7cd011db47"
    assert tenant.path("alerts", "date=2025-01-01/x.parquet") == f"{tmp_path}/lake/alerts/{level}/date=2025-01-01/x.parquet"
    assert tenant.path("_locks/date=2025-01-01.lock") == f"{tmp_path}/lake/_locks/{level}/date=2025-01-01.lock"
    assert tenant.path("_ip_index", "month=2025-01") == f"{tmp_path}/lake/_ip_index/{level}/month=2025-01"
    assert tenant.path() == root.path() == str(tmp_path / "lake")
    assert tenant.table_glob("alerts") == f"{tmp_path}/lake/alerts/{level}/*/*.parquet"
    assert root.tenant_id is None and tenant.tenant_id == "72f988bf-86f1-41af-91ab-2d7cd011db47"
    # One tenant, one folder: a GUID in any case is lower-cased, a domain name refused.
    assert tenant.for_tenant("72F988BF-86F1-41AF-91AB-2D7CD011DB47").path("alerts") == f"{tmp_path}/lake/alerts/{level}"
    with pytest.raises(LakeLocationError, match="domain name"):
        root.for_tenant("contoso.onmicrosoft.com")


@pytest.mark.parametrize("bad", ["", "a/b", "..", ".hidden", "a=b", "x" * 129, "tenant id", None])
def test_a_tenant_id_that_cannot_name_a_folder_is_refused(tmp_path, bad):
    with pytest.raises(LakeLocationError, match="cannot name a lake partition"):
        resolve_lake_location(tmp_path / "lake").for_tenant(bad)


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


def test_error_texts_are_redacted():
    text = "bad: DefaultEndpointsProtocol=http;AccountName=a;AccountKey=c2VjcmV0a2V5==;BlobEndpoint=http://x?sv=1&sig=abc%2Fdef&se=2"
    redacted = redact(text)
    assert "c2VjcmV0a2V5" not in redacted and "abc%2Fdef" not in redacted
    assert "AccountKey=***" in redacted and "sig=***" in redacted and "AccountName=a" in redacted


@pytest.mark.parametrize(
    "connection_string, refused",
    [
        ("AccountName=acct;AccountKey=x;BlobEndpoint=http://10.0.0.5:10000/acct;", True),
        ("AccountName=acct;AccountKey=x;BlobEndpoint=http://storage.example.org/acct;", True),
        ("AccountName=acct;AccountKey=x;BlobEndpoint=http://127.0.0.1:10000/acct;", False),  # Azurite
        ("AccountName=acct;AccountKey=x;BlobEndpoint=http://localhost:10000/acct;", False),
        ("AccountName=acct;AccountKey=x;BlobEndpoint=http://[::1]:10000/acct;", False),
        ("AccountName=acct;AccountKey=x;BlobEndpoint=https://acct.blob.core.windows.net;", False),
        ("AccountName=acct;AccountKey=x;BlobEndpoint=http://127.8.9.10:10000/acct;", False),  # all of 127/8
        # Azurite's public development account earns nothing off loopback (the sandbox opts in: below)
        ("AccountName=devstoreaccount1;AccountKey=x;BlobEndpoint=http://azurite:10000/devstoreaccount1;", True),
        ("AccountName=devstoreaccount1;AccountKey=x;BlobEndpoint=http://localhost.example.org/devstoreaccount1;", True),
    ],
)
def test_plain_http_blob_endpoint_is_refused_except_on_loopback(connection_string, refused):
    def factory(protocol, root, conn_id):
        return FakeBlobFs(connection_string=connection_string)

    account = connection_string.split(";")[0].split("=")[1]
    root = f"abfs://lake@{account}.dfs.core.windows.net/p"
    if refused:
        with pytest.raises(LakeLocationError, match="plain-http endpoint") as caught:
            resolve_lake_location(root, "c", blob_filesystem=factory)
        assert "AccountKey" not in str(caught.value)
    else:
        resolve_lake_location(root, "c", blob_filesystem=factory)


def test_plain_http_account_url_of_a_real_adlfs_filesystem_is_refused():
    """DefaultEndpointsProtocol=http without BlobEndpoint: adlfs' own service client URL."""
    from adlfs import AzureBlobFileSystem

    def factory(protocol, root, conn_id):
        return AzureBlobFileSystem(connection_string="DefaultEndpointsProtocol=http;AccountName=acct;AccountKey=eA==;EndpointSuffix=core.windows.net")

    with pytest.raises(LakeLocationError, match="http://acct.blob.core.windows.net"):
        resolve_lake_location("abfs://lake@acct.dfs.core.windows.net/p", "c", blob_filesystem=factory)


def test_plain_http_off_loopback_only_with_the_connections_opt_in():
    def factory(protocol, root, conn_id):
        return FakeBlobFs(connection_string="AccountName=devstoreaccount1;AccountKey=x;BlobEndpoint=http://azurite:10000/devstoreaccount1;")

    asked = []

    def policy(conn_id):
        asked.append(conn_id)
        return conn_id == "sandbox"

    root = "abfs://lake@devstoreaccount1.dfs.core.windows.net/p"
    assert resolve_lake_location(root, "sandbox", blob_filesystem=factory, plain_http_allowed=policy).root == "lake/p"
    with pytest.raises(LakeLocationError, match="allow_plain_http"):
        resolve_lake_location(root, "prod", blob_filesystem=factory, plain_http_allowed=policy)
    assert asked == ["sandbox", "prod"]
    # never asked for https or loopback
    resolve_lake_location(root, "prod", blob_filesystem=lambda *a: FakeBlobFs(
        connection_string="AccountName=devstoreaccount1;BlobEndpoint=http://127.0.0.1:10000/x;"), plain_http_allowed=policy)
    assert asked == ["sandbox", "prod"]


@pytest.mark.parametrize(
    "extra, allowed",
    [({"allow_plain_http": True}, True), ({"allow_plain_http": "true"}, True), ({}, False),
     ({"allow_plain_http": False}, False), ({"allow_plain_http": "yes"}, "refused")],
)
def test_the_airflow_face_reads_allow_plain_http_from_the_lake_connection(monkeypatch, extra, allowed):
    import json
    import uuid

    from mde_pipeline.airflow.lake_location import configured_lake_location

    conn_id = f"mde_lake_http_{uuid.uuid4().hex[:8]}"
    connection_string = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=eA==;BlobEndpoint=http://azurite:10000/devstoreaccount1;"
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps({"conn_type": "adls", "extra": {"connection_string": connection_string, **extra}}),
    )
    root = "abfs://mde-lake@devstoreaccount1.dfs.core.windows.net/mde"
    if allowed is True:
        assert configured_lake_location(root, conn_id).account_name == "devstoreaccount1"
        return
    match = "extra 'allow_plain_http' must be true or false" if allowed == "refused" else "plain-http endpoint"
    with pytest.raises(LakeLocationError, match=match) as caught:
        configured_lake_location(root, conn_id)
    assert "eA==" not in str(caught.value)


def test_the_airflow_face_follows_a_changed_lake_connection(monkeypatch):
    """The abfs filesystem is built from the connection as it is now: a long-lived process
    (the API server's status page, a test session) must not keep an old account or key
    after the connection changed, as Airflow's per-process store cache would."""
    import json

    from mde_pipeline.airflow.lake_location import configured_lake_location

    def connect(account: str) -> None:
        connection_string = f"DefaultEndpointsProtocol=https;AccountName={account};AccountKey=eA==;EndpointSuffix=core.windows.net"
        monkeypatch.setenv("AIRFLOW_CONN_MDE_LAKE", json.dumps({"conn_type": "adls", "extra": {"connection_string": connection_string}}))

    connect("firstacct")
    assert configured_lake_location("abfs://lake/p", "mde_lake").account_name == "firstacct"
    connect("secondacct")
    assert configured_lake_location("abfs://lake/p", "mde_lake").account_name == "secondacct"
    with pytest.raises(LakeLocationError, match="names storage account 'firstacct'.*'secondacct'"):
        configured_lake_location("abfs://lake@firstacct.dfs.core.windows.net/p", "mde_lake")
