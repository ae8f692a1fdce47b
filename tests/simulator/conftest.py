"""Fixtures for the simulator's protocol tests (helpers live in simhttp.py)."""
import pytest

from simhttp import Api


@pytest.fixture
def api(simulator):
    client = Api(simulator)
    yield client
    client.close()
