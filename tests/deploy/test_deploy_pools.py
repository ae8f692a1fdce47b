"""include/pools.json: the pool the operators run in, in the format `airflow pools import` reads.

(The import itself runs for real in test_deploy_init.py, through the init script.)
"""

from __future__ import annotations

import json

from conftest import REPO

POOLS = REPO / "include" / "pools.json"


def test_pools_file_defines_the_operators_pool():
    from mde_pipeline.airflow.settings import MDE_POOL

    pools = json.loads(POOLS.read_text())
    assert list(pools) == [MDE_POOL] == ["mde_api"]
    pool = pools["mde_api"]
    # The keys `airflow pools import` documents; team_name is for multi-team setups only.
    assert set(pool) == {"slots", "description", "include_deferred"}
    assert pool["slots"] == 2 and pool["include_deferred"] is False


def test_pool_description_says_what_the_slots_mean():
    description = json.loads(POOLS.read_text())["mde_api"]["description"]
    # The limits it quotes are the limiter's defaults, so the text stays true.
    from mde_pipeline.api.windows import parse_rate_limits

    limits = [[w.limit, int(w.seconds)] for w in parse_rate_limits(None)]
    assert json.dumps(limits).replace(" ", "") in description.replace(" ", "")
    assert "at once" in description and "rate limiter" in description and "ledger" in description
