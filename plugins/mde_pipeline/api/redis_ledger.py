"""The budget ledger in Redis: one budget per (client id, tenant) shared by every host.

With workers on several hosts, a SQLite file per host can only split the budget
statically (``rate_limit_share = 1/hosts``), wasting an idle host's share and keeping a
429's Retry-After on the host that saw it. A Redis ledger (connection extra
``rate_limit_ledger = "redis://..."`` or ``"rediss://..."``: the Redis the
CeleryExecutor already runs, or another) holds the same state for everybody:

    mde-ledger:{<tenant>:<client>}:calls   sorted set: reservation id -> time (s)
    mde-ledger:{<tenant>:<client>}:block   the time until which nobody may call
    mde-ledger:{<tenant>:<client>}:ids     counter of reservation ids
    mde-ledger:{<tenant>:<client>}:minutes calls granted / 429s per minute, 24 h (status page)
    mde-ledger:{<tenant>:<client>}:bgcalls the backfills' reservations (a subset of calls)
    mde-ledger:{<tenant>:<client>}:waiting until when an hourly load waits (backfill_reserve rule 4)

Each reservation is one Lua script, so the read-decide-insert is atomic across every
process on every host, exactly as ``BEGIN IMMEDIATE`` makes it on one host. The
arithmetic is the one of :func:`mde_pipeline.api.windows.seconds_until_free` (same
epsilon, same "excess oldest must leave" rule). The ``{...}`` hash tag keeps a budget's
keys in one Redis Cluster slot.

Times are the callers' clocks (``time.time()``), like the SQLite ledger's: hosts must
keep NTP time; their skew adds to the latency that ``rate_limit_margin_seconds`` covers.
Keys expire on their own once idle for longer than the longest window (the id counter
and the history after a day).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Sequence

from mde_pipeline.api.backfill_reserve import LOAD_WAITING_GRACE_SECONDS, retention_seconds
from mde_pipeline.api.ledgers import HISTORY_SECONDS, Decision
from mde_pipeline.api.redis_url import REDIS_SCHEMES, is_redis_url, parse_redis_url
from mde_pipeline.api.windows import EPSILON, Window, max_block_seconds

__all__ = ["REDIS_SCHEMES", "RedisLedger", "is_redis_url"]

log = logging.getLogger(__name__)

KEY_PREFIX = "mde-ledger:"
HISTORY_MINUTES = HISTORY_SECONDS // 60

# KEYS: calls, block, ids, minutes, bgcalls, waiting. ARGV: now, how long reservations
# are kept (backfill_reserve.retention_seconds), block ceiling (absolute), epsilon,
# history length in minutes, background (0/1), number of windows n, the load-waiting
# grace, then n limit/seconds pairs, then (background only) n background limit/seconds
# pairs. Returns {wait as text, blocked 0/1, entry id or 0}: Redis truncates Lua numbers
# to integers, so the wait travels as text. The rules are api/backfill_reserve.py's
# (decide, background_wait, load_waiting_until), line for line.
_RESERVE = """
local now = tonumber(ARGV[1])
local kept = tonumber(ARGV[2])
local ceiling = tonumber(ARGV[3])
local eps = tonumber(ARGV[4])
local background = tonumber(ARGV[6])
local n = tonumber(ARGV[7])
local grace = tonumber(ARGV[8])
local first_pair = 9
-- '%.17g' round-trips every double; '%.9f' rounded times below ~1e8 s (test clocks)
-- and a block stored a hair late turned "blocked, wait 0.000000000" into a grant.
local function fmt(x) return string.format('%.17g', x) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - kept)
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - kept)
local waiting = tonumber(redis.call('GET', KEYS[6]) or '0')
-- Rule 4: a foreground caller told to wait marks the budget wanted; a granted one
-- renews a live mark (backfill_reserve.load_waiting_until).
local function mark(wait)
  if background == 1 then return end
  local marked = waiting
  if wait > 0 then
    marked = math.max(waiting, now + wait + grace)
  elseif waiting > now then
    marked = math.max(waiting, now + grace)
  end
  if marked ~= waiting then
    redis.call('SET', KEYS[6], fmt(marked), 'PX', math.ceil((marked - now + 60) * 1000))
  end
end
local blocked = tonumber(redis.call('GET', KEYS[2]) or '0')
if blocked > ceiling then
  blocked = ceiling
  redis.call('SET', KEYS[2], fmt(blocked), 'KEEPTTL')
end
if blocked > now then
  mark(blocked - now)
  return {fmt(blocked - now), 1, 0}
end
local longest = 0
for k = 0, n - 1 do
  longest = math.max(longest, tonumber(ARGV[first_pair + 2 * k + 1]))
end
-- The backfill's room in the longest window (backfill_reserve.replacing_windows): its
-- free calls there (one short) and the backfills' own longest limit, the lesser.
local room = 0
for k = 0, n - 1 do
  local i = first_pair + 2 * k
  if tonumber(ARGV[i + 1]) == longest then
    local horizon = '(' .. fmt(now - longest + eps)
    local free = math.max(1, tonumber(ARGV[i]) - 1) - redis.call('ZCOUNT', KEYS[1], horizon, '+inf')
    room = free
    if background == 1 then
      local own = tonumber(ARGV[i + 2 * n]) - redis.call('ZCOUNT', KEYS[5], horizon, '+inf')
      room = math.min(free, own)
    end
  end
end
-- Rule 2 spreads that room evenly until the backfill's oldest call there leaves.
local horizon_s = longest
if background == 1 then
  local own = redis.call('ZRANGEBYSCORE', KEYS[5], '(' .. fmt(now - longest + eps), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #own > 0 then horizon_s = tonumber(own[2]) + longest - now end
end
local wait = 0
local function fit(set, first, spare, replacing)
  for k = 0, n - 1 do
    local i = first + 2 * k
    local limit = math.max(1, tonumber(ARGV[i]) - spare)
    local seconds = tonumber(ARGV[i + 1])
    if replacing and seconds < longest then
      -- Rule 2: the room at an even pace (backfill_reserve.even_pace), raised to the
      -- calls that left the longest window in the last shorter one, and to the whole
      -- shorter window once the room is within the even pace of an empty hour.
      local whole = math.max(1, tonumber(ARGV[first_pair + 2 * k]) - 1)
      local nominal = limit
      limit = math.min(whole, math.max(1, math.ceil(room * seconds / math.max(seconds, horizon_s) - 1e-9)))
      local raised = whole
      if room > nominal then
        raised = math.min(redis.call('ZCOUNT', KEYS[1], '(' .. fmt(now - longest - seconds + eps), fmt(now - longest + eps)), whole)
      end
      limit = math.max(limit, raised)
    end
    local horizon = '(' .. fmt(now - seconds + eps)
    local excess = redis.call('ZCOUNT', set, horizon, '+inf') - limit + 1
    if excess > 0 then
      local oldest = redis.call('ZRANGEBYSCORE', set, horizon, '+inf', 'WITHSCORES', 'LIMIT', excess - 1, 1)
      local w = tonumber(oldest[2]) + seconds - now
      if w > wait then wait = w end
    end
  end
end
-- A backfill leaves one call of each window free (windows.leave_one_free).
fit(KEYS[1], first_pair, background, false)
if background == 1 then
  local shared = wait
  wait = 0
  fit(KEYS[5], first_pair + 2 * n, 0, true)
  if wait > 0 then
    -- Never past the next call leaving the longest window (it raises the cap).
    local next = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. fmt(now - longest + eps), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    if #next > 0 then
      wait = math.min(wait, math.max(0, tonumber(next[2]) + longest - now))
    end
  end
  wait = math.max(wait, shared, waiting - now)
else
  mark(wait)
end
if wait > 0 then
  return {fmt(wait), 0, 0}
end
local id = redis.call('INCR', KEYS[3])
local ttl = math.ceil((kept + 60) * 1000)
redis.call('ZADD', KEYS[1], fmt(now), id)
redis.call('PEXPIRE', KEYS[1], ttl)
-- The id counter outlives the reservations by the history (a day): were it to restart
-- at 1, an attempt settled after its entry was pruned could move a new namesake.
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[5]) * 60 + 3600)
local minute = math.floor(now / 60)
local gone = minute - tonumber(ARGV[5])
redis.call('HINCRBY', KEYS[4], 'c:' .. minute, 1)
if background == 1 then
  redis.call('ZADD', KEYS[5], fmt(now), id)
  redis.call('PEXPIRE', KEYS[5], ttl)
end
redis.call('HDEL', KEYS[4], 'c:' .. gone, 't:' .. gone)
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[5]) * 60 + 3600)
return {'0', 0, id}
"""

# KEYS: block. ARGV: until, time to live in seconds (0: none). Keeps the later block.
_BLOCK = """
local till = tonumber(ARGV[1])
local held = tonumber(redis.call('GET', KEYS[1]) or '0')
if till > held then
  redis.call('SET', KEYS[1], string.format('%.17g', till))
  local ttl = tonumber(ARGV[2])
  if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
end
return 0
"""


class RedisLedger:
    """:class:`~mde_pipeline.api.ledgers.Ledger` on a Redis server shared by every host."""

    def __init__(self, url: str, *, ca_file: str | None = None, client: Any = None) -> None:
        import redis

        options: dict[str, Any] = {"socket_timeout": 30, "socket_connect_timeout": 10, "health_check_interval": 30}
        if client is None:
            # Parsed here, not by redis-py: a password with '/', '#' or '?' would be cut in
            # two and half of it taken for the host (api/redis_url.py).
            parsed = parse_redis_url(url)
            if parsed.scheme == "rediss" and ca_file:
                options["ssl_ca_certs"] = ca_file  # TLS stays verified: certifi + REQUESTS_CA_BUNDLE
            client = redis.Redis.from_url(parsed.normalised, **options)
        self._redis = client
        self._reserve = self._redis.register_script(_RESERVE)
        self._block = self._redis.register_script(_BLOCK)

    @staticmethod
    def _keys(key: str) -> tuple[str, str, str, str, str, str]:
        base = f"{KEY_PREFIX}{{{key}}}"
        return (
            f"{base}:calls", f"{base}:block", f"{base}:ids", f"{base}:minutes", f"{base}:bgcalls", f"{base}:waiting"
        )  # fmt: skip

    def reserve(
        self, key: str, now: float, windows: Sequence[Window], background: Sequence[Window] | None = None
    ) -> Decision:
        if background is not None and len(background) != len(windows):
            raise ValueError("background limits must pair with the windows one to one")
        pairs = [value for w in (*windows, *(background or ())) for value in (w.limit, repr(float(w.seconds)))]
        wait, blocked, entry = self._reserve(
            keys=self._keys(key),
            args=[repr(now), repr(retention_seconds(windows)), repr(now + max_block_seconds(windows)), EPSILON,
                  HISTORY_MINUTES, int(background is not None), len(windows), LOAD_WAITING_GRACE_SECONDS,
                  *pairs],  # fmt: skip
        )
        # Granted = an entry was recorded (ids start at 1): never told by the wait alone.
        return Decision(float(wait), bool(int(blocked)), int(entry) or None)

    def settle(self, key: str, entry: int, at: float) -> None:
        # XX: only an entry still kept (and only in the set that holds it); GT: never earlier.
        names = self._keys(key)
        for name in (names[0], names[4]):
            self._redis.zadd(name, {str(entry): at}, xx=True, gt=True)

    def block_until(self, key: str, until: float) -> None:
        # The block key outlives the block by a minute, then Redis drops it. (A caller
        # clock far from wall time, as in tests, gets no expiry; reserve clips anyway.)
        ttl = math.ceil(until - time.time()) + 60
        self._block(keys=[self._keys(key)[1]], args=[repr(until), ttl if 60 < ttl < 10 * 365 * 86400 else 0])

    def count_throttle(self, key: str, at: float) -> None:
        """One 429 received at ``at`` (the per-minute history of the operator's view)."""
        name = self._keys(key)[3]
        self._redis.hincrby(name, f"t:{int(at // 60)}", 1)
        self._redis.expire(name, HISTORY_MINUTES * 60 + 3600)

    def history(self, key: str, since_minute: int) -> list[tuple[int, int, int]]:
        """(minute, calls granted, 429s) from ``since_minute`` on, ascending."""
        counts: dict[int, list[int]] = {}
        stale = []
        for field, value in self._redis.hgetall(self._keys(key)[3]).items():
            kind, minute = (field.decode() if isinstance(field, bytes) else field).split(":")
            if int(minute) >= since_minute:
                counts.setdefault(int(minute), [0, 0])[kind == "t"] = int(value)
            elif int(minute) < since_minute - 60:  # past the history: a reader keeps it bounded
                stale.append(field)
        if stale:
            self._redis.hdel(self._keys(key)[3], *stale)
        return [(minute, calls, throttled) for minute, (calls, throttled) in sorted(counts.items())]

    def calls_since(self, key: str, since: float, *, background: bool = False) -> int:
        """Reservations after ``since`` (what the limiter sees in a window); only the
        backfills' with ``background``."""
        return int(self._redis.zcount(self._keys(key)[4 if background else 0], f"({since!r}", "+inf"))

    def keys(self) -> list[str]:
        """Every budget key the ledger holds."""
        names = (n.decode() if isinstance(n, bytes) else n for n in self._redis.scan_iter(match=f"{KEY_PREFIX}{{*}}:*"))
        return sorted({name[len(KEY_PREFIX) + 1 : name.rindex("}")] for name in names})

    def load_waiting_until(self, key: str) -> float:
        """Until when an hourly load's wait holds the backfills' calls (0: not held)."""
        value = self._redis.get(self._keys(key)[5])
        return float(value) if value else 0.0

    def blocked_until(self, key: str) -> float:
        value = self._redis.get(self._keys(key)[1])
        return float(value) if value is not None else 0.0

    def reservations(self, key: str) -> list[float]:
        return [score for _, score in self._redis.zrange(self._keys(key)[0], 0, -1, withscores=True)]

    def blocks(self) -> dict[str, float]:
        """Every stored block, key -> until (Redis drops a block a minute after it ends)."""
        found = {}
        for name in self._redis.scan_iter(match=f"{KEY_PREFIX}{{*}}:block", count=500):
            text = name.decode() if isinstance(name, bytes) else name
            value = self._redis.get(name)
            if value is not None:
                found[text[len(KEY_PREFIX) + 1 : -len("}:block")]] = float(value)
        return dict(sorted(found.items()))

    def clear_blocks(self, key: str | None = None) -> int:
        """Remove the block of ``key`` (every block when None); returns how many went."""
        keys = [self._keys(k)[1] for k in ([key] if key is not None else self.blocks())]
        return int(self._redis.delete(*keys)) if keys else 0

    def close(self) -> None:
        self._redis.close()
