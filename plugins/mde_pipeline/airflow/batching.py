"""Split an interval's listed alerts into batches for dynamic task mapping.

One mapped task instance fetches one batch, so a failed batch retries alone. The batch
size starts at ``batch_size`` (100 alerts: about a minute of the API's 100 calls/min)
and grows only when the hour is so busy that the batch count would pass ``max_batches``;
``max_batches`` (1000) stays below Airflow's ``[core] max_map_length`` (1024 by default).

Each batch is a small JSON-serialisable dict (it travels through XCom)::

    {"batch_index": 0, "batch_count": 3,
     "alerts": [{"alert_id": "da6...", "last_update_time": "2024-01-01T00:00:01.1234567Z"}, ...]}

``last_update_time`` is the service's string, unchanged (7 digits), so the fetch result
joins back to the listed alert version exactly. The same listing always gives the same
batches: alerts are ordered by (lastUpdateTime, id) whatever order they came in.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from mde_pipeline.airflow.settings import DEFAULT_BATCH_SIZE
from mde_pipeline.common.timestamps import parse_timestamp

DEFAULT_MAX_BATCHES = 1000


def effective_batch_size(
    alert_count: int, batch_size: int = DEFAULT_BATCH_SIZE, max_batches: int = DEFAULT_MAX_BATCHES
) -> int:
    """``batch_size``, grown just enough that ``alert_count`` alerts fit in ``max_batches``."""
    if batch_size < 1 or max_batches < 1:
        raise ValueError(f"batch_size and max_batches must be positive, got {batch_size}, {max_batches}")
    return max(batch_size, math.ceil(alert_count / max_batches))


def make_batches(
    alerts: Iterable[dict[str, Any]],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batches: int = DEFAULT_MAX_BATCHES,
) -> list[dict[str, Any]]:
    """Batches of ``{"alert_id", "last_update_time"}`` for alerts as the listing returns them.

    An empty listing gives no batches (Airflow then skips the mapped task).
    """
    entries = []
    seen: set[str] = set()
    for alert in alerts:
        alert_id, raw_time = alert.get("id"), alert.get("lastUpdateTime")
        if not isinstance(alert_id, str) or not alert_id:
            raise ValueError(f"listed alert without an id: {alert!r:.200}")
        if alert_id in seen:
            # The listing keeps one version per id; two here would fetch and store twice.
            raise ValueError(f"alert {alert_id} appears twice in the listing")
        seen.add(alert_id)
        entries.append((parse_timestamp(raw_time), alert_id, raw_time))
    entries.sort()

    size = effective_batch_size(len(entries), batch_size, max_batches)
    count = math.ceil(len(entries) / size)
    return [
        {
            "batch_index": index,
            "batch_count": count,
            "alerts": [
                {"alert_id": alert_id, "last_update_time": raw_time}
                for _, alert_id, raw_time in entries[index * size : (index + 1) * size]
            ],
        }
        for index in range(count)
    ]
