"""Late alerts, kept versions, each version's IPs fetched once (issue 11): a day of runs.

    python -m bench late_alerts [--hours 24 --alerts-per-hour 60 --late-share 0.02
                                 --late-minutes 45 --settle-minutes 5 --scale 60]

The DAG's steps in-process (no Airflow: list + look-back, batches, the fetch through the
fetch cache, publish) against the HTTPS simulator, hour after hour on the simulator's
clock (`now` = end of the hour + settle), with:

- ``--late-share`` of the alerts listable only ``--late-minutes`` after lastUpdateTime
  (those still unlistable at their hour's run, H+1h+settle, are missed by it);
- every 6 hours one fetch task killed mid-batch (the client dies after half the batch,
  the call in flight lost as with SIGKILL) and retried;
- every 6 hours a rerun of the hour 3 hours back (at the current clock);
- a final run one hour after the last, whose look-back finds the last hours' late alerts.

Windows: the real ones divided by ``--scale`` (pacing only; the budget figures are
counts). Prints: IP calls per alert version (target <= 1.02), look-back listing calls
and their share of the hourly budget (target <= 2%), IP calls for late versions, late
alerts missed (target 0: the lake against the ground truth), and freshness, measured:
for every alert version, the time from its lastUpdateTime (and, for late alerts, from
when the simulator made it listable) to the commit of the run that landed it, on the
simulator's clock (the run starts at H+1h+settle; its own wall time is added, unscaled:
the API here is local, so a deployment's runs take longer), p50/p95/max, on-time and
late alerts apart. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench import percentiles, scaled_rate_limits  # noqa: E402  (sets sys.path; percentiles: re-exported)
import lake_check  # noqa: E402
from mde_simulator.lateness import Lateness  # noqa: E402
from mde_simulator.process import SimulatorProcess  # noqa: E402
from mde_pipeline.airflow.batching import make_batches  # noqa: E402
from mde_pipeline.airflow.cached_fetch import fetch_batch_cached  # noqa: E402
from mde_pipeline.airflow.lake_tasks import publish_interval, stage_listing  # noqa: E402
from mde_pipeline.airflow.lookback import list_lookback, stage_lookback  # noqa: E402
from mde_pipeline.api.client import MdeClient  # noqa: E402
from mde_pipeline.api.config import MdeConnectionConfig  # noqa: E402
from mde_pipeline.api.listing import list_interval  # noqa: E402
from mde_pipeline.lake.location import resolve_lake_location  # noqa: E402

DATA_START = datetime(2026, 2, 2, tzinfo=timezone.utc)
HOURLY_BUDGET = 1500
SETTLE_MINUTES = 5.0  # the DAG's default (MDE_ALERT_IPS_SETTLE_SECONDS = 300)


class Killed(BaseException):
    """The task died (not an Exception: nothing may catch it)."""


class DyingClient:
    """Passes calls through, then dies after ``after`` IP calls (the last call's answer lost)."""

    def __init__(self, client, after: int) -> None:
        self.client, self.after, self.calls = client, after, 0

    def get_alert_ips(self, alert_id):
        self.calls += 1
        answer = self.client.get_alert_ips(alert_id)
        if self.calls >= self.after:
            raise Killed()
        return answer


def counts(sim) -> dict[str, int]:
    calls = sim.stats()["calls"]
    return {endpoint: sum(calls.get(endpoint, {}).values()) for endpoint in ("list", "ips")}


def run_hour(sim, client, location, hour, *, now, lookback, batch_size, kill=False, refetch=False) -> dict:
    """One run of ``hour`` at ``now`` on the simulator's clock; ``committed_at``: ``now``
    plus the run's wall time up to the end of publish."""
    started = time.monotonic()
    sim.configure(now=now.isoformat())
    context = {"data_interval_start": hour, "data_interval_end": hour + timedelta(hours=1),
               "run_id": f"bench__{hour:%Y%m%dT%H}", "params": {"refetch": refetch}}
    before = counts(sim)
    listing = list_interval(client, hour, hour + timedelta(hours=1))
    own_lists = counts(sim)["list"] - before["list"]
    late = list_lookback(client, location, hour, lookback, batch_size=batch_size)
    stage_listing(listing.as_document(), context, location)
    batches = make_batches(listing.alerts, batch_size=batch_size)
    if late is not None:
        batches += stage_lookback(late, context, location)
    lookback_ips = sum(len(b["alerts"]) for b in batches if b.get("lookback"))
    results = []
    for index, batch in enumerate(batches):
        if kill and index == 0 and len(batch["alerts"]) > 1:
            try:
                fetch_batch_cached(DyingClient(client, len(batch["alerts"]) // 2), batch, location,
                                   client.tenant_id, refetch=refetch, label="killed")
            except Killed:
                pass
        results.append(fetch_batch_cached(client, batch, location, client.tenant_id, refetch=refetch, label=f"b{index}"))
    summary = publish_interval(context, results, location)
    committed_at = now + timedelta(seconds=time.monotonic() - started)
    after = counts(sim)
    return {"lists": after["list"] - before["list"], "own_lists": own_lists, "ips": after["ips"] - before["ips"],
            "lookback_versions": lookback_ips, "added": sum(summary["lookback_added"].values()),
            "committed_at": committed_at, "seconds": (committed_at - now).total_seconds()}


def lake_versions(location) -> set[tuple[str, datetime]]:
    """(alert_id, last_update_time) of every alert version in the lake."""
    connection = lake_check.connect(location)
    try:
        return set(connection.execute("SELECT alert_id, last_update_time FROM alerts").fetchall())
    finally:
        connection.close()


def freshness(landed: dict[tuple[str, datetime], datetime], late_ids: set[str], late_minutes: float) -> dict[str, tuple | None]:
    """Minutes from each version's lastUpdateTime (and, late ones, from when it became
    listable) to the commit that landed it: p50/p95/max for on-time and late alerts."""
    delay = timedelta(minutes=late_minutes)
    minutes = {"on_time": [], "late": [], "late_after_listable": []}
    for (alert_id, updated), committed in landed.items():
        after = (committed - updated).total_seconds() / 60
        if alert_id in late_ids:
            minutes["late"].append(after)
            minutes["late_after_listable"].append((committed - updated - delay).total_seconds() / 60)
        else:
            minutes["on_time"].append(after)
    return {name: (len(values), percentiles(values)) for name, values in minutes.items()}


def format_freshness(name: str, figures: tuple[int, tuple | None]) -> str:
    count, spread = figures
    if spread is None:
        return f"  {name}: no versions"
    return f"  {name} ({count} versions): p50 {spread[0]:.1f} min, p95 {spread[1]:.1f} min, max {spread[2]:.1f} min"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench late_alerts", description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--alerts-per-hour", type=int, default=60)
    parser.add_argument("--late-share", type=float, default=0.02)
    parser.add_argument("--late-minutes", type=float, default=45)
    parser.add_argument("--lookback-hours", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--scale", type=float, default=60)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--settle-minutes", type=float, default=SETTLE_MINUTES)
    args = parser.parse_args(argv)

    hours = lake_check.hours(DATA_START, DATA_START + timedelta(hours=args.hours))
    with tempfile.TemporaryDirectory(prefix="bench-late-") as tmp:
        tmp_path = Path(tmp)
        with SimulatorProcess(tmp_path / "sim", alerts=args.alerts_per_hour * args.hours, seed=args.seed,
                              start=DATA_START.isoformat(), end=(DATA_START + timedelta(hours=args.hours)).isoformat(),
                              rate_limits=scaled_rate_limits(args.scale), late_share=args.late_share,
                              late_minutes=args.late_minutes) as sim:
            conn = json.loads(sim.connection_uri(ca_bundle=sim.ca_bundle, rate_limit_ledger_dir=str(tmp_path / "ledger"),
                                                 rate_limits=scaled_rate_limits(args.scale), rate_limit_margin_seconds=0.05))
            config = MdeConnectionConfig.from_parts(host=conn["host"], login=conn["login"], password=conn["password"],
                                                    extra=conn["extra"], conn_id="sim")
            # The tenant's part of the lake, as the DAG's tasks use it.
            location = resolve_lake_location(str(tmp_path / "lake")).for_tenant(config.tenant_id)
            lookback = timedelta(hours=args.lookback_hours)
            settle = timedelta(minutes=args.settle_minutes)
            rows = []
            landed: dict[tuple[str, datetime], datetime] = {}  # version -> commit that first held it

            def note_landed(row: dict) -> None:
                for version in lake_versions(location) - landed.keys():
                    landed[version] = row["committed_at"]

            with MdeClient(config) as client:
                for number, hour in enumerate([*hours, hours[-1] + timedelta(hours=1)]):
                    now = hour + timedelta(hours=1) + settle
                    rows.append(run_hour(sim, client, location, hour, now=now, lookback=lookback,
                                         batch_size=args.batch_size, kill=number % 6 == 0 and number < len(hours)))
                    note_landed(rows[-1])
                    if number % 6 == 3:
                        rows.append(run_hour(sim, client, location, hours[number - 3], now=rows[-1]["committed_at"],
                                             lookback=lookback, batch_size=args.batch_size))
                        note_landed(rows[-1])
            truth = sim.ground_truth()
            comparison = lake_check.compare(location, truth, hours)
            lateness = Lateness(truth["seed"], args.late_share)
            late_ids = [i for i in truth["alerts"] if lateness.is_late(i)]
            connection = lake_check.connect(location)
            late_by = dict(connection.execute(
                "SELECT found_by_lookback_at IS NOT NULL, count(*) FROM alerts WHERE alert_id IN (SELECT unnest($1)) GROUP BY 1",
                [late_ids or [""]]).fetchall())
            connection.close()

    versions = comparison.expected_alerts + comparison.kept_versions
    ips = sum(r["ips"] for r in rows)
    lookback_lists = sum(r["lists"] - r["own_lists"] for r in rows)
    runs = len(rows)
    print(f"runs: {runs} ({args.hours + 1} hourly, {runs - args.hours - 1} reruns); alerts: {len(truth['alerts'])}, "
          f"late (listable {args.late_minutes:g} min after lastUpdateTime): {len(late_ids)}")
    print(f"IP calls: {ips} for {versions} alert versions = {ips / max(versions, 1):.3f} per version (target <= 1.02)")
    print(f"look-back: {lookback_lists} listing calls over {runs} runs = {lookback_lists / runs:.2f} per run "
          f"= {100 * lookback_lists / runs / HOURLY_BUDGET:.3f}% of the hourly budget (target <= 2%)")
    print(f"look-back IP calls (late versions only): {sum(r['lookback_versions'] for r in rows)}; "
          f"rows added to committed hours: {sum(r['added'] for r in rows)}")
    print(f"late alerts missed: {len([p for p in comparison.problems if p.endswith('is missing')])} (target 0); "
          f"lake vs ground truth: {'exact' if comparison.exact else comparison}")
    print(f"late versions landed by their hour's own run: {late_by.get(False, 0)}, by a look-back: {late_by.get(True, 0)} "
          f"(found_by_lookback_at)")
    figures = freshness(landed, set(late_ids), args.late_minutes)
    seconds = percentiles([r["seconds"] for r in rows])
    print(f"freshness, lastUpdateTime -> committed (runs list at H+1h+settle, settle {args.settle_minutes:g} min; "
          f"a run's own wall time here: p50 {seconds[0]:.1f} s, max {seconds[2]:.1f} s):")
    print(format_freshness("on-time alerts", figures["on_time"]))
    print(format_freshness("late alerts", figures["late"]))
    print(format_freshness(f"late alerts, from listable (lastUpdateTime + {args.late_minutes:g} min)", figures["late_after_listable"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
