import sys
from pathlib import Path

# The lake tests' data builder (tests/lake/lake_data.py) makes the prepared intervals.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lake"))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def template_db(tmp_path_factory):
    """One migrated metadata DB per session; each test copies it into its own home."""
    from local_airflow import migrated_template

    return migrated_template(tmp_path_factory.getbasetemp() / "airflow-template")
