"""The distribution (`make dist`): one wheel holding the package, its version and entry
points, and what Airflow finds through them with nothing copied into its folders."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO
from mde_pipeline import __version__
from mde_pipeline.airflow.lake_location import default_lake_root
from mde_pipeline.airflow.provider_info import CONN_FIELDS, get_provider_info
from mde_pipeline.api.config import KNOWN_EXTRA_KEYS

FORM_FIELDS = {"tenant_id", "cloud", "certificate_path", "certificate_data", "certificate_password",
               "use_managed_identity", "managed_identity_client_id", "use_workload_identity",
               "federated_token_file", "rate_limits", "rate_limit_share", "rate_limit_ledger",
               "rate_limit_ledger_dir"}  # fmt: skip

# What Airflow sees in a process where only the wheel adds the pipeline (PYTHONPATH = the
# wheel installed into a folder): its providers manager and its plugin loader.
DISCOVERY = """
import json, sys
from airflow import plugins_manager
from airflow.providers_manager import ProvidersManager
import mde_pipeline
from mde_pipeline.airflow.lake_location import default_lake_root

pm = ProvidersManager()
hook = pm.hooks["mde"]
widgets = {key: info.field for key, info in pm._connection_form_widgets_from_metadata.items()
           if key.startswith("extra__mde__")}
plugins, errors = plugins_manager._get_plugins()
repo_plugins, repo_errors = plugins_manager._load_plugins_from_plugin_directory(
    plugins_folder=sys.argv[1], load_examples=False, example_plugins_module=None, ignore_file_syntax="glob")
print(json.dumps({
    "package": mde_pipeline.__file__, "lake": str(default_lake_root()), "provider_version": pm.providers["mde-alert-ips"].version,
    "hook": [hook.hook_class_name, hook.hook_name, hook.connection_testable],
    "widgets": widgets, "sensitive": sorted(k for k, i in pm._connection_form_widgets_from_metadata.items()
                                            if k.startswith("extra__mde__") and i.is_sensitive),
    "behaviour": pm.field_behaviours.get("mde"),
    "plugins": [p.name for p in plugins], "errors": errors,
    "repo_plugins": [p.name for p in repo_plugins], "repo_errors": repo_errors,
}))
"""


@pytest.fixture(scope="module")
def wheel_files(built_wheel) -> dict[str, bytes]:
    with zipfile.ZipFile(built_wheel) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_the_wheel_holds_the_package_with_its_runtime_files_and_nothing_else(built_wheel, wheel_files):
    assert built_wheel.name == f"mde_alert_ips-{__version__}-py3-none-any.whl"
    tops = {name.split("/")[0] for name in wheel_files}
    assert tops == {"mde_pipeline", f"mde_alert_ips-{__version__}.dist-info"}  # no simulator, include/, tests
    packaged = {name for name in wheel_files if name.startswith("mde_pipeline/")}
    in_repo = {str(p.relative_to(REPO / "plugins")) for p in (REPO / "plugins" / "mde_pipeline").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}  # fmt: skip
    assert packaged == in_repo  # every module and data file (views.sql) of plugins/mde_pipeline
    assert "mde_pipeline/analytics/views.sql" in packaged and "mde_pipeline/airflow/dags/alert_ips.py" in packaged
    metadata = wheel_files[f"mde_alert_ips-{__version__}.dist-info/METADATA"].decode()
    assert "Name: mde-alert-ips" in metadata and f"Version: {__version__}" in metadata
    assert "Requires-Dist: apache-airflow==3.3.2" in metadata


def test_from_the_repository_the_default_lake_stays_the_repos():
    assert default_lake_root() == REPO / "lake"  # installed from the wheel: <AIRFLOW_HOME>/lake (below)


def test_the_version_is_written_once_and_has_a_changelog_entry():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'version = { attr = "mde_pipeline.__version__" }' in pyproject and __version__ not in pyproject
    assert f"## {__version__}" in (REPO / "CHANGELOG.md").read_text()


def test_entry_points_name_the_plugin_and_the_provider_info(wheel_files):
    entry_points = wheel_files[f"mde_alert_ips-{__version__}.dist-info/entry_points.txt"].decode()
    assert "[airflow.plugins]\nmde_pipeline = mde_pipeline.airflow.plugin:MdePipelinePlugin" in entry_points
    assert "[apache_airflow_provider]\nprovider_info = mde_pipeline.airflow.provider_info:get_provider_info" in entry_points


def test_the_provider_info_passes_airflows_schema_and_every_field_is_an_extra_of_the_config():
    from airflow.providers_manager import _create_provider_info_schema_validator

    info = get_provider_info()
    _create_provider_info_schema_validator().validate(info)
    assert info["package-name"] == "mde-alert-ips"
    [connection_type] = info["connection-types"]
    assert connection_type["connection-type"] == "mde" and connection_type["hook-name"] == "Microsoft Defender for Endpoint"
    assert set(CONN_FIELDS) == FORM_FIELDS and FORM_FIELDS <= KNOWN_EXTRA_KEYS


def test_airflow_finds_the_connection_type_and_the_plugin_through_the_wheel_alone(wheel_site, tmp_path):
    site = wheel_site
    (tmp_path / "plugins").mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(site), "AIRFLOW_HOME": str(tmp_path / "home"),
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(tmp_path / "plugins"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", DISCOVERY, str(REPO / "plugins")], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["package"].startswith(str(site)) and seen["provider_version"] == __version__
    assert seen["lake"] == str(tmp_path / "home" / "lake")  # no repository: the lake in AIRFLOW_HOME
    assert seen["hook"] == ["mde_pipeline.airflow.hooks.MdeHook", "Microsoft Defender for Endpoint", True]
    assert set(seen["widgets"]) == {f"extra__mde__{name}" for name in FORM_FIELDS}
    assert seen["widgets"]["extra__mde__cloud"]["schema"]["enum"][:2] == ["commercial", "commercial_legacy"]
    assert seen["sensitive"] == [f"extra__mde__{k}" for k in ("certificate_data", "certificate_password", "rate_limit_ledger")]
    assert seen["behaviour"]["relabeling"]["login"] == "Client ID" and "port" in seen["behaviour"]["hidden_fields"]
    assert seen["plugins"].count("mde_pipeline") == 1 and seen["errors"] == {}
    # The repository's plugins folder beside the wheel adds no second plugin and no error.
    assert seen["repo_plugins"] == [] and seen["repo_errors"] == {}
