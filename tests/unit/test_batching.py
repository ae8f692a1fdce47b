"""Batches for dynamic task mapping: bounded count, deterministic, JSON-serialisable."""

from __future__ import annotations

import json
import random

import pytest

from mde_pipeline.airflow.batching import effective_batch_size, make_batches


def listing(count: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [
        {
            "id": f"da{638000000000000000 + i}_{rng.randrange(2**31)}",
            "lastUpdateTime": (
                f"2024-03-10T13:{rng.randrange(60):02d}:{rng.randrange(60):02d}.{rng.randrange(10**7):07d}Z"
            ),
            "title": "big entity field that must not travel in a batch",
        }
        for i in range(count)
    ]


@pytest.mark.parametrize(
    "count, expected_batches, expected_size",
    [
        (0, 0, 100),
        (1, 1, 100),
        (100, 1, 100),
        (101, 2, 100),
        (99_999, 1000, 100),
        (100_000, 1000, 100),
        (100_001, 1000, 101),  # grown so the count never passes max_batches
        (250_000, 1000, 250),
        (1_000_001, 1000, 1001),
    ],
)
def test_batch_count_is_bounded(count, expected_batches, expected_size):
    assert effective_batch_size(count) == expected_size
    if count <= 1000:  # building 10^6 dicts adds nothing to the arithmetic above
        batches = make_batches(listing(count))
        assert len(batches) == expected_batches


def test_batches_cover_each_alert_once_in_order_with_bounds_respected():
    alerts = listing(12_345)
    batches = make_batches(alerts, batch_size=100, max_batches=50)
    assert len(batches) == 50
    sizes = [len(b["alerts"]) for b in batches]
    assert max(sizes) == 247 and sum(sizes) == 12_345  # ceil(12345 / 50)
    assert [b["batch_index"] for b in batches] == list(range(50))
    assert {b["batch_count"] for b in batches} == {50}
    flat = [entry for b in batches for entry in b["alerts"]]
    assert sorted(e["alert_id"] for e in flat) == sorted(a["id"] for a in alerts)
    assert [e["last_update_time"] for e in flat] == sorted(a["lastUpdateTime"] for a in alerts)
    by_id = {a["id"]: a["lastUpdateTime"] for a in alerts}
    assert all(by_id[e["alert_id"]] == e["last_update_time"] for e in flat)  # raw string, all 7 digits


def test_same_listing_same_batches_whatever_the_input_order():
    alerts = listing(1234, seed=3)
    shuffled = alerts[:]
    random.Random(9).shuffle(shuffled)
    assert make_batches(alerts) == make_batches(shuffled)


def test_ties_on_time_are_ordered_by_id():
    alerts = [
        {"id": "b", "lastUpdateTime": "2024-03-10T13:00:00.5Z"},
        {"id": "a", "lastUpdateTime": "2024-03-10T13:00:00.5000000Z"},
        {"id": "c", "lastUpdateTime": "2024-03-10T13:00:00.4999999Z"},
    ]
    assert [e["alert_id"] for e in make_batches(alerts)[0]["alerts"]] == ["c", "a", "b"]


def test_batches_are_small_json():
    batches = make_batches(listing(300))
    assert json.loads(json.dumps(batches)) == batches
    assert set(batches[0]) == {"batch_index", "batch_count", "alerts"}
    assert set(batches[0]["alerts"][0]) == {"alert_id", "last_update_time"}
    assert len(json.dumps(batches[0])) < 120 * 100  # about 100 bytes per alert, no entity fields


def test_duplicate_or_missing_ids_are_errors():
    with pytest.raises(ValueError, match="twice"):
        make_batches([{"id": "a", "lastUpdateTime": "2024-03-10T13:00:00Z"}] * 2)
    with pytest.raises(ValueError, match="without an id"):
        make_batches([{"lastUpdateTime": "2024-03-10T13:00:00Z"}])
    with pytest.raises(ValueError):
        make_batches([{"id": "a", "lastUpdateTime": "yesterday"}])


@pytest.mark.parametrize("batch_size, max_batches", [(0, 10), (10, 0), (-1, 5)])
def test_bounds_must_be_positive(batch_size, max_batches):
    with pytest.raises(ValueError, match="positive"):
        make_batches([], batch_size=batch_size, max_batches=max_batches)
