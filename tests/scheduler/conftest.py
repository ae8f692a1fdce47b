import pytest

from local_airflow import migrated_template


@pytest.fixture(scope="session")
def template_db(tmp_path_factory):
    """One migrated metadata DB per session; each test copies it into its own home."""
    return migrated_template(tmp_path_factory.getbasetemp() / "airflow-template")
