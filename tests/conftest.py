import pytest

from mde_simulator.process import SimulatorProcess


@pytest.fixture
def simulator(request, tmp_path_factory):
    """A running HTTPS simulator (mde_simulator.process.SimulatorProcess), stopped after the test.

    Options: parametrize indirectly, e.g.
        @pytest.mark.parametrize("simulator", [{"alerts": 50, "rate_limits": [[10, 1]]}],
                                 indirect=True)
    """
    options = dict(getattr(request, "param", None) or {})
    with SimulatorProcess(tmp_path_factory.mktemp("simulator"), **options) as sim:
        yield sim
