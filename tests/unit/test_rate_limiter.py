"""Sliding-window limiter: window edges, two windows, blocks, share, shared ledgers."""

from __future__ import annotations

import multiprocessing
import os
import stat
import tempfile

import pytest

from mde_pipeline.api.errors import MdeThrottledError
from mde_pipeline.api.ledgers import SqliteLedger, default_ledger_dir, ledger_key
from mde_pipeline.api.rate_limiter import RateLimiter
from mde_pipeline.api.windows import Window, effective_windows, parse_rate_limits, seconds_until_free
from mde_pipeline.api.redis_ledger import RedisLedger
from tests.support.api_fakes import FakeClock, InMemoryLedger
from local_redis import RedisServer

KEY = ledger_key("tenant", "client")


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture(params=["memory", "redis"])
def any_ledger(request, make_ledger):
    """The window arithmetic runs in Python (memory, sqlite) and in Lua (redis): both here."""
    return make_ledger(request.param)


@pytest.fixture
def make_ledger(tmp_path, request):
    """A fresh ledger of each kind: one process (memory), the host (sqlite), every host (redis)."""
    made = []

    def make(kind: str):
        if kind == "memory":
            return InMemoryLedger()
        if kind == "sqlite":
            ledger = SqliteLedger(tmp_path / "l.sqlite3")
        else:
            ledger = RedisLedger(request.getfixturevalue("redis_url"))
            ledger._redis.flushdb()  # a fresh budget per test
        made.append(ledger)
        return ledger

    yield make
    for ledger in made:
        ledger.close()


def make_limiter(limits, *, clock, ledger=None, margin=0.0, share=1.0, max_blocked_wait=None):
    return RateLimiter(
        parse_rate_limits(limits),
        key=KEY,
        ledger=ledger or InMemoryLedger(),
        clock=clock,
        margin_seconds=margin,
        share=share,
        max_blocked_wait=max_blocked_wait,
    )


def max_in_any_window(timestamps, seconds):
    """Most reservations inside any half-open window [t, t + seconds)."""
    ts = sorted(timestamps)
    best = 0
    for i, start in enumerate(ts):
        best = max(best, sum(1 for t in ts[i:] if t < start + seconds - 1e-9))
    return best


def test_exactly_limit_calls_pass_then_next_waits_until_oldest_leaves_window_plus_margin(any_ledger):
    clock = FakeClock(start=1000.0)
    limiter = make_limiter([[3, 10]], clock=clock, ledger=any_ledger, margin=0.5)
    slots = [limiter.acquire() for _ in range(3)]
    assert [s.reserved_at for s in slots] == [1000.0, 1000.0, 1000.0]
    assert clock.sleeps == []

    fourth = limiter.acquire()
    assert clock.sleeps == [pytest.approx(10.5)]
    assert fourth.reserved_at == pytest.approx(1010.5)
    assert fourth.waited_seconds == pytest.approx(10.5)


def test_spread_calls_wait_only_for_the_oldest_one(any_ledger):
    clock = FakeClock(start=0.0)
    limiter = make_limiter([[3, 10]], clock=clock, ledger=any_ledger, margin=1.0)
    for _ in range(3):
        limiter.acquire()
        clock.advance(2.0)  # reservations at 0, 2, 4; now 6
    slot = limiter.acquire()
    assert slot.reserved_at == pytest.approx(11.0)  # 0 + 10 + 1
    slot = limiter.acquire()
    assert slot.reserved_at == pytest.approx(13.0)  # 2 + 10 + 1


def test_a_call_just_before_the_edge_waits_and_one_at_the_edge_does_not(any_ledger):
    clock = FakeClock(start=0.0)
    ledger = any_ledger
    limiter = make_limiter([[2, 5]], clock=clock, ledger=ledger)
    limiter.acquire()
    limiter.acquire()
    clock.advance(4.999)
    assert limiter.acquire().waited_seconds == pytest.approx(0.001)
    clock2 = FakeClock(start=0.0)
    limiter2 = make_limiter([[2, 5]], clock=clock2)
    limiter2.acquire()
    limiter2.acquire()
    clock2.advance(5.0)
    assert limiter2.acquire().waited_seconds == 0.0


def test_two_windows_interact_short_then_long(any_ledger):
    # 2 per 1 s and 3 per 10 s: the 3rd call waits for the short window, the 4th for the long one.
    clock = FakeClock(start=0.0)
    limiter = make_limiter([[2, 1], [3, 10]], clock=clock, ledger=any_ledger)
    times = [limiter.acquire().reserved_at for _ in range(5)]
    assert times == pytest.approx([0.0, 0.0, 1.0, 10.0, 10.0])
    assert max_in_any_window(times, 1.0) <= 2
    assert max_in_any_window(times, 10.0) <= 3


def test_many_calls_never_exceed_any_window(any_ledger):
    clock = FakeClock(start=0.0)
    limiter = make_limiter([[10, 1], [50, 5]], clock=clock, ledger=any_ledger, margin=0.05)
    times = [limiter.acquire().reserved_at for _ in range(200)]
    assert max_in_any_window(times, 1.05) == 10
    assert max_in_any_window(times, 5.05) == 50
    # No slack wasted: every wait ends exactly when an earlier reservation leaves a window.
    for i in range(1, len(times)):
        if times[i] > times[i - 1]:
            assert any(abs(times[i] - (t + w)) < 1e-6 for t in times[:i] for w in (1.05, 5.05))


def test_blocked_until_is_waited_out_by_every_user_of_the_ledger(any_ledger):
    clock = FakeClock(start=100.0)
    ledger = any_ledger
    first = make_limiter([[100, 60]], clock=clock, ledger=ledger, margin=0.5)
    second = make_limiter([[100, 60]], clock=clock, ledger=ledger, margin=0.5)
    first.acquire()
    until = first.record_throttle(30.0)
    assert until == pytest.approx(130.5)
    slot = second.acquire()
    assert slot.reserved_at == pytest.approx(130.5)
    assert slot.waited_seconds == pytest.approx(30.5)


def test_a_later_throttle_extends_the_block_and_an_earlier_one_does_not_shorten_it():
    clock = FakeClock(start=0.0)
    ledger = InMemoryLedger()
    limiter = make_limiter([[100, 60]], clock=clock, ledger=ledger)
    limiter.record_throttle(50.0)
    limiter.record_throttle(10.0)
    assert ledger.blocked_until(KEY) == pytest.approx(50.0)


def test_block_longer_than_allowed_raises_throttled_with_retry_after():
    clock = FakeClock(start=0.0)
    limiter = make_limiter([[100, 60], [1500, 3600]], clock=clock, max_blocked_wait=60.0)
    limiter.record_throttle(3600.0)
    with pytest.raises(MdeThrottledError) as info:
        limiter.acquire()
    assert info.value.retry_after == pytest.approx(3600.0)
    assert clock.sleeps == []


@pytest.mark.parametrize("absurd", [999_999_999.0, float("inf")])
def test_record_throttle_never_writes_a_block_past_the_longest_window_plus_slack(absurd):
    # Windows 60 s and 3,600 s: no block past 3,600 + 60 s (+ the margin) from now.
    clock, ledger = FakeClock(start=0.0), InMemoryLedger()
    limiter = make_limiter([[100, 60], [1500, 3600]], clock=clock, ledger=ledger, margin=0.5)
    assert limiter.max_block_seconds == 3660.0
    limiter.record_throttle(absurd)
    assert ledger.blocked_until(KEY) == pytest.approx(3660.5)
    limiter.record_throttle(float("nan"))  # NaN counts as 0 and never shortens a block
    assert ledger.blocked_until(KEY) == pytest.approx(3660.5)


@pytest.mark.parametrize("ledger_kind", ["sqlite", "memory", "redis"])
def test_a_stored_block_beyond_the_longest_window_is_clipped_once_and_then_ends(make_ledger, ledger_kind, caplog):
    # A block written before the cap existed ("budget is blocked for 999999762s more").
    ledger = make_ledger(ledger_kind)
    ledger.block_until(KEY, 999_999_999.0)
    clock = FakeClock(start=0.0)
    limiter = make_limiter([[100, 60], [1500, 3600]], clock=clock, ledger=ledger)
    slot = limiter.acquire()
    assert clock.sleeps == [pytest.approx(3660.0)]  # clipped to now + 3,600 + 60, not 31 years
    assert slot.reserved_at == pytest.approx(3660.0)
    assert ledger.blocked_until(KEY) == pytest.approx(3660.0)  # stored clipped: it has ended
    assert limiter.acquire().waited_seconds == 0.0
    if ledger_kind == "sqlite":
        assert "clipped" in caplog.text


@pytest.mark.parametrize("ledger_kind", ["sqlite", "redis"])
def test_ledgers_show_and_clear_blocks(make_ledger, ledger_kind):
    ledger = make_ledger(ledger_kind)
    ledger.block_until("a:1", 100.0)
    ledger.block_until("b:2", 200.0)
    assert ledger.blocks() == {"a:1": 100.0, "b:2": 200.0}
    assert ledger.clear_blocks("a:1") == 1
    assert ledger.clear_blocks("a:1") == 0
    assert ledger.blocks() == {"b:2": 200.0}
    assert ledger.clear_blocks() == 1
    assert ledger.blocks() == {}


def test_share_scales_every_limit_and_keeps_at_least_one_call():
    windows = effective_windows(parse_rate_limits([[100, 60], [1500, 3600], [1, 1]]), share=0.5, margin=1.0)
    assert windows == (Window(50, 61.0), Window(750, 3601.0), Window(1, 2.0))
    clock = FakeClock(start=0.0)
    limiter = make_limiter([[4, 10]], clock=clock, share=0.5)
    times = [limiter.acquire().reserved_at for _ in range(3)]
    assert times == pytest.approx([0.0, 0.0, 10.0])


@pytest.mark.parametrize(
    "bad",
    [[], [[0, 60]], [[10, 0]], [[10]], [["10", 60]], [[True, 60]], "100/60", [[10, float("inf")]]],
)
def test_bad_rate_limits_are_refused(bad):
    with pytest.raises(ValueError):
        parse_rate_limits(bad)


def test_bad_share_or_margin_is_refused():
    with pytest.raises(ValueError):
        effective_windows(parse_rate_limits(None), share=0, margin=1)
    with pytest.raises(ValueError):
        effective_windows(parse_rate_limits(None), share=1.5, margin=1)
    with pytest.raises(ValueError):
        effective_windows(parse_rate_limits(None), share=1, margin=-1)


def test_seconds_until_free_is_zero_for_an_empty_ledger_and_uses_the_binding_window():
    windows = (Window(2, 10.0), Window(3, 100.0))
    assert seconds_until_free([], 0.0, windows) == 0.0
    assert seconds_until_free([0.0, 50.0, 95.0], 96.0, windows) == pytest.approx(4.0)  # 100 - 96


def test_sqlite_ledger_persists_across_instances_and_prunes_old_entries(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    clock = FakeClock(start=0.0)
    first = make_limiter([[2, 10]], clock=clock, ledger=SqliteLedger(path))
    first.acquire()
    first.acquire()
    # A new task (new process, new ledger object) in the same slot knows the history.
    second = make_limiter([[2, 10]], clock=clock, ledger=SqliteLedger(path))
    assert second.acquire().reserved_at == pytest.approx(10.0)
    clock.advance(100.0)
    second.acquire()
    assert SqliteLedger(path).reservations(KEY) == [pytest.approx(110.0)]


def test_ledger_keys_are_independent_budgets(tmp_path):
    clock = FakeClock(start=0.0)
    ledger = SqliteLedger(tmp_path / "ledger.sqlite3")
    a = RateLimiter(parse_rate_limits([[1, 10]]), key=ledger_key("t", "a"), ledger=ledger, clock=clock, margin_seconds=0)
    b = RateLimiter(parse_rate_limits([[1, 10]]), key=ledger_key("t", "b"), ledger=ledger, clock=clock, margin_seconds=0)
    a.acquire()
    assert b.acquire().waited_seconds == 0.0
    assert a.acquire().waited_seconds == pytest.approx(10.0)


def test_sqlite_ledger_records_blocks(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    clock = FakeClock(start=0.0)
    make_limiter([[5, 10]], clock=clock, ledger=SqliteLedger(path)).record_throttle(7.0)
    slot = make_limiter([[5, 10]], clock=clock, ledger=SqliteLedger(path)).acquire()
    assert slot.reserved_at == pytest.approx(7.0)


def _reserve_in_process(path: str, count: int, ready, start, queue) -> None:
    from mde_pipeline.api.ledgers import SqliteLedger
    from mde_pipeline.api.rate_limiter import RateLimiter, SystemClock
    from mde_pipeline.api.windows import parse_rate_limits

    limiter = RateLimiter(
        parse_rate_limits([[5, 0.4], [12, 1.5]]),
        key=KEY,
        ledger=SqliteLedger(path),
        clock=SystemClock(),
        margin_seconds=0.0,
    )
    ready.put(os.getpid())
    start.wait(60)
    queue.put([limiter.acquire().reserved_at for _ in range(count)])


def test_processes_sharing_a_sqlite_ledger_never_exceed_the_limits(tmp_path):
    path = str(tmp_path / "ledger.sqlite3")
    SqliteLedger(path)  # create the schema once
    ctx = multiprocessing.get_context("fork")  # children inherit the imports (fast start)
    queue, ready, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    workers = [ctx.Process(target=_reserve_in_process, args=(path, 10, ready, start, queue)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.get(timeout=120)
    start.set()  # all three compete from the same moment
    results = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    times = [t for result in results for t in result]
    assert len(times) == 30
    # The recorded reservation times are what the ledger granted: check them exactly.
    assert max_in_any_window(times, 0.4) <= 5
    assert max_in_any_window(times, 1.5) <= 12
    # 30 calls at 12 per 1.5 s cannot fit in less than two long windows
    assert max(times) - min(times) >= 2 * 1.5 - 1e-6


def test_default_ledger_dir_order(monkeypatch, tmp_path):
    monkeypatch.delenv("MDE_RATE_LIMIT_LEDGER_DIR", raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    assert default_ledger_dir() == os.path.join(str(tmp_path / "home"), "mde_rate_ledger")
    monkeypatch.setenv("MDE_RATE_LIMIT_LEDGER_DIR", str(tmp_path / "env"))
    assert default_ledger_dir() == str(tmp_path / "env")
    assert default_ledger_dir(str(tmp_path / "extra")) == str(tmp_path / "extra")
    monkeypatch.delenv("MDE_RATE_LIMIT_LEDGER_DIR")
    monkeypatch.delenv("AIRFLOW_HOME")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    fallback = default_ledger_dir()
    assert fallback == str(tmp_path / "tmp" / f"mde_rate_ledger_{os.getuid()}")
    assert stat.S_IMODE(os.stat(fallback).st_mode) == 0o700


def test_ledger_fallback_is_never_a_directory_others_can_write(monkeypatch, tmp_path):
    monkeypatch.delenv("MDE_RATE_LIMIT_LEDGER_DIR", raising=False)
    monkeypatch.delenv("AIRFLOW_HOME", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    planted = tmp_path / f"mde_rate_ledger_{os.getuid()}"
    planted.mkdir()
    planted.chmod(0o777)  # as if someone else had created it world-writable
    with pytest.raises(PermissionError, match="MDE_RATE_LIMIT_LEDGER_DIR"):
        default_ledger_dir()
    planted.rmdir()
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    planted.symlink_to(target)
    with pytest.raises(PermissionError):
        default_ledger_dir()


def test_fake_clock_never_goes_backwards_and_records_sleeps():
    clock = FakeClock(start=5.0)
    clock.sleep(2.0)
    clock.sleep(-1.0)
    assert clock.now() == 7.0
    assert clock.sleeps == [2.0, -1.0]


@pytest.mark.parametrize("ledger_kind", ["memory", "sqlite", "redis"])
def test_a_settled_reservation_counts_from_when_its_attempt_ended(make_ledger, ledger_kind):
    # A slow request (reserved at 0, ended at 0.8) keeps its slot until 0.8 + W'.
    clock = FakeClock(start=0.0)
    ledger = make_ledger(ledger_kind)
    limiter = make_limiter([[2, 10]], clock=clock, ledger=ledger, margin=0.5)
    slow = limiter.acquire()
    limiter.acquire()
    clock.advance(0.8)
    limiter.settle(slow)
    assert ledger.reservations(KEY) == [0.0, pytest.approx(0.8)]
    third = limiter.acquire()
    assert third.reserved_at == pytest.approx(10.5)  # the unsettled one (0) left first
    fourth = limiter.acquire()
    assert fourth.reserved_at == pytest.approx(11.3)  # 0.8 + 10 + 0.5


def test_settle_never_moves_a_reservation_earlier():
    clock = FakeClock(start=10.0)
    ledger = InMemoryLedger()
    limiter = make_limiter([[5, 10]], clock=clock, ledger=ledger)
    slot = limiter.acquire()
    ledger.settle(KEY, slot.entry, 3.0)
    assert ledger.reservations(KEY) == [10.0]
