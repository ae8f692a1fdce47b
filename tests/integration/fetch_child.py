"""Child process of the kill test: fetch one batch through the fetch cache, as the fetch
task does, so the parent can SIGKILL it mid-batch.

python fetch_child.py CONNECTION_JSON LAKE_ROOT BATCH_JSON
"""
from __future__ import annotations

import json
import sys

from mde_pipeline.airflow.cached_fetch import fetch_batch_cached
from mde_pipeline.api.client import MdeClient
from mde_pipeline.api.config import MdeConnectionConfig
from mde_pipeline.lake.location import resolve_lake_location


def main(connection: str, lake_root: str, batch_file: str) -> None:
    conn = json.loads(connection)
    config = MdeConnectionConfig.from_parts(
        host=conn["host"], login=conn["login"], password=conn["password"], extra=conn["extra"], conn_id="sim"
    )
    batch = json.loads(open(batch_file).read())
    with MdeClient(config) as client:
        location = resolve_lake_location(lake_root).for_tenant(client.tenant_id)  # as the fetch task's
        results = fetch_batch_cached(client, batch, location, client.tenant_id, flush_every=1, label="child")
    print(json.dumps({"results": len(results)}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
