"""The three ledgers decide alike: the same seeded random operations on a fake timeline
(foreground and backfill reservations, settles, 429 blocks, ties) give the same
decisions from SqliteLedger, RedisLedger (its Lua re-implements the rules) and the
tests' InMemoryLedger. decide() and api/backfill_reserve.py are the reference."""

from __future__ import annotations

import random

import pytest

from mde_pipeline.api.backfill_reserve import background_windows
from mde_pipeline.api.ledgers import SqliteLedger, ledger_key
from mde_pipeline.api.redis_ledger import RedisLedger
from mde_pipeline.api.windows import Window
from tests.support.api_fakes import InMemoryLedger
from local_redis import RedisServer

# Small windows, so the rules bind often. The caller's clock is far from wall time on
# purpose: Redis then sets no expiry on a block (RedisLedger.block_until).
START = 1_000_000.0
SHAPES = {
    "one": (Window(5, 10.0),),
    "two": (Window(6, 10.0), Window(20, 60.0)),
    "three": (Window(3, 4.0), Window(6, 10.0), Window(20, 60.0)),
}


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture
def ledgers(tmp_path, redis_url):
    """Fresh ledgers, the reference (decide() on Python lists) first."""
    redis = RedisLedger(redis_url)
    redis._redis.flushdb()
    sqlite = SqliteLedger(tmp_path / "ledger.sqlite3")
    made = {"memory": InMemoryLedger(), "sqlite": sqlite, "redis": redis}
    yield made
    sqlite.close()
    redis.close()


@pytest.fixture(params=["memory", "sqlite", "redis"])
def ledger(request, ledgers):
    return ledgers[request.param]


def test_a_block_ends_and_a_reservation_is_kept_at_the_exact_time_given(ledger):
    """Found by the random test: the Lua wrote times as '%.9f', which is not exact below
    ~1e8 s (test clocks, any clock near 0). A block ending at 100 + 2/3 was stored
    rounded up, so a reservation at exactly that time was told "blocked, wait 0.000000000"
    which RedisLedger turned into a grant with entry 0 that was never recorded."""
    key = ledger_key("tenant", "client")
    windows = (Window(5, 10.0),)
    ends = 100.0 + 2 / 3
    ledger.block_until(key, ends)
    assert ledger.reserve(key, ends - 1e-9, windows).blocked
    decision = ledger.reserve(key, ends, windows)
    assert (decision.wait_seconds, decision.blocked) == (0, False) and decision.entry
    assert ledger.reservations(key) == [ends]
    assert ledger.blocked_until(key) == ends


def test_settling_an_entry_after_it_was_pruned_moves_no_other_reservation(ledger):
    """Found by the random test: SqliteLedger's entry was the rowid, which SQLite hands
    out again once the newest row is deleted; an attempt that outlived the retention
    then settled the next reservation instead of nothing."""
    key = ledger_key("tenant", "client")
    windows = (Window(5, 10.0),)
    hung = ledger.reserve(key, 100.0, windows)
    later = ledger.reserve(key, 200.0, windows)  # prunes the hung attempt's entry
    assert hung.entry != later.entry
    ledger.settle(key, hung.entry, 205.0)
    assert ledger.reservations(key) == [200.0]


def same_decisions(ledgers, call):
    """``call(ledger)`` on each; the decisions must agree. Returns {name: decision}."""
    decisions = {name: call(ledger) for name, ledger in ledgers.items()}
    reference = decisions["memory"]
    for name, decision in decisions.items():
        assert decision.blocked == reference.blocked, (name, decisions)
        assert (decision.entry is not None) == (reference.entry is not None), (name, decisions)
        assert decision.wait_seconds == pytest.approx(reference.wait_seconds, abs=1e-6), (name, decisions)
    return decisions


def same_reservations(ledgers, key):
    reference = ledgers["memory"].reservations(key)
    for name, ledger in ledgers.items():
        assert ledger.reservations(key) == pytest.approx(reference, abs=1e-6), name


def drive(ledgers, key: str, *, seed: int, windows, floor_share: float, steps: int) -> dict[str, int]:
    """``steps`` random operations; returns how often each kind of outcome happened
    (so the test can tell the rules were exercised)."""
    rng = random.Random(seed)
    background = background_windows(windows, floor_share=floor_share)
    shortest = min(w.seconds for w in windows)
    longest = max(w.seconds for w in windows)
    now = START
    granted: list[tuple[float, dict[str, int]]] = []  # (time, {ledger: its entry id})
    seen = {"granted": 0, "waited": 0, "blocked": 0, "background_waited": 0, "settled": 0}
    last_wait = 0.0
    for step in range(steps):
        roll = rng.random()
        if roll < 0.84:
            kind = background if roll >= 0.42 else None
            decisions = same_decisions(ledgers, lambda ledger: ledger.reserve(key, now, windows, kind))
            decision = decisions["memory"]
            last_wait = decision.wait_seconds
            if decision.entry is not None:
                seen["granted"] += 1
                granted.append((now, {name: d.entry for name, d in decisions.items()}))
            else:
                seen["blocked" if decision.blocked else "waited"] += 1
                seen["background_waited"] += kind is not None and not decision.blocked
        elif roll < 0.97:
            if granted:
                # A recent attempt ends (the limiter settles at its end; sometimes a
                # little past the clock, or before the entry's time: a no-op).
                at, entries = rng.choice(granted[-12:])
                end = at + rng.choice([0.0, rng.uniform(-0.5, 3.0), now - at])
                for name, ledger in ledgers.items():
                    ledger.settle(key, entries[name], end)
                seen["settled"] += 1
        else:
            # A 429; sometimes a Retry-After past what any window allows (clipped).
            until = now + rng.choice([rng.uniform(0.1, shortest), rng.uniform(longest, longest + 200.0)])
            for ledger in ledgers.values():
                ledger.block_until(key, until)
        # The clock: ties, the sleep a limiter would take, or random steps.
        step_roll = rng.random()
        if step_roll < 0.25:
            pass
        elif step_roll < 0.55 and last_wait > 0:
            now += last_wait
        elif step_roll < 0.97:
            now += rng.choice([rng.uniform(0.0, shortest / 4), rng.uniform(0.0, 1.0), 0.5])
        else:
            now += rng.uniform(longest / 2, longest * 1.5)
        if step % 10 == 0:
            same_reservations(ledgers, key)
    same_reservations(ledgers, key)
    assert len({round(ledger.blocked_until(key), 6) for ledger in ledgers.values()}) == 1
    return seen


@pytest.mark.parametrize("floor_share", [0.0, 0.2])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_the_three_ledgers_decide_alike_on_random_operations(ledgers, shape, floor_share):
    for seed in range(3):
        key = ledger_key(f"tenant-{seed}", "client")  # a fresh budget per seed
        seed = seed * 1000 + sorted(SHAPES).index(shape) * 10 + int(floor_share * 10)
        seen = drive(ledgers, key, seed=seed, windows=SHAPES[shape], floor_share=floor_share, steps=300)
        assert seen["granted"] > 30 and seen["background_waited"] > 10 and seen["blocked"] > 0, seen
