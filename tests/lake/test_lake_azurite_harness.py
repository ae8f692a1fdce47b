"""The Azurite harness fails loudly (never skips) when Azurite cannot be installed."""

from __future__ import annotations

import json
import stat

import pytest

from tests.lake.azurite import AZURITE_VERSION, AzuriteServer, AzuriteUnavailable, azurite_executable


def _fake_npm(directory, script: str):
    directory.mkdir()
    npm = directory / "npm"
    npm.write_text("#!/bin/sh\n" + script)
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    return directory


def test_missing_npm_is_a_clear_failure(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(AzuriteUnavailable, match="npm is not on PATH"):
        azurite_executable(tmp_path / "install")


def test_failing_npm_install_is_a_clear_failure_with_npms_output(tmp_path, monkeypatch):
    bin_dir = _fake_npm(tmp_path / "bin", 'echo "npm ERR! code ENOTFOUND registry.npmjs.org" >&2\nexit 1\n')
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(AzuriteUnavailable, match=f"(?s)cannot install Azurite.*azurite@{AZURITE_VERSION}.*exit 1.*ENOTFOUND"):
        AzuriteServer(install_dir=tmp_path / "install").start()


def test_installed_version_is_reused_without_npm(tmp_path, monkeypatch):
    install = tmp_path / "install"
    (install / "node_modules" / "azurite").mkdir(parents=True)
    (install / "node_modules" / "azurite" / "package.json").write_text(json.dumps({"version": AZURITE_VERSION}))
    (install / "node_modules" / ".bin").mkdir()
    (install / "node_modules" / ".bin" / "azurite-blob").write_text("")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # npm would fail: it must not be needed
    assert azurite_executable(install) == install / "node_modules" / ".bin" / "azurite-blob"


def test_other_installed_version_is_replaced(tmp_path, monkeypatch):
    install = tmp_path / "install"
    (install / "node_modules" / "azurite").mkdir(parents=True)
    (install / "node_modules" / "azurite" / "package.json").write_text(json.dumps({"version": "3.0.0"}))
    log = tmp_path / "npm-args"
    bin_dir = _fake_npm(tmp_path / "bin", f'echo "$@" > {log}\nexit 1\n')
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(AzuriteUnavailable):
        azurite_executable(install)
    assert f"install --prefix {install} azurite@{AZURITE_VERSION}" in log.read_text()


def test_connection_for_airflow(azurite):
    connection = azurite.airflow_connection()
    assert connection["conn_type"] == "adls"
    assert connection["extra"]["account_name"] == "devstoreaccount1"
    assert f"BlobEndpoint=http://127.0.0.1:{azurite.port}/devstoreaccount1;" in connection["extra"]["connection_string"]
    env = azurite.airflow_env("mde_lake", root=azurite.lake_root("lake", "p"))
    assert json.loads(env["AIRFLOW_CONN_MDE_LAKE"]) == connection
    assert env["AIRFLOW_VAR_MDE_LAKE_ROOT"] == "abfs://lake@devstoreaccount1.dfs.core.windows.net/p"
    assert env["AIRFLOW_VAR_MDE_LAKE_CONN_ID"] == "mde_lake"
