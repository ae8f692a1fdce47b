"""How well the MDE client uses the API budget: 2,000 alerts against the simulator.

    python -m bench client_budget [--alerts 2000 --scale 20 --callers 1,2 --margins 1.0,0.25]
                                  [--ledgers sqlite,redis --shares 1,0.5]
    python -m bench.client_budget ...              (the same, without the dispatcher)

Real windows are 100 calls / 60 s and 1,500 calls / 3,600 s; fetching 2,000 alerts at
that pace takes over an hour. ``--scale S`` divides every window's length by S (calls
stay the same), so the run is S times faster and exercises the same arithmetic: at
S = 20 the windows are [[100, 3], [1500, 180]]. ``--rate-limits`` sets them directly.

For every (margin, callers) configuration, on a fresh simulator and a fresh ledger:

1. ``callers`` worker processes start (Python + Airflow imports), each with its own
   ``MdeHook`` client built from ``AIRFLOW_CONN_MDE_DEFAULT`` (``sim.connection_uri``)
   and ``REQUESTS_CA_BUNDLE`` (``sim.env``); every client points extra
   ``rate_limit_ledger_dir`` at one temp dir, so they share the SQLite ledger as pool
   slots on one host would.
2. When they are ready, this process lists the interval with its own client (as the
   DAG's list task does, on the same ledger: the listing call spends budget too) via
   ``api.listing.list_interval``, splits it with ``airflow.batching.make_batches`` and deals
   the batches round-robin to the workers.
3. Each worker runs ``api.fetch.fetch_batch_ips`` over its batches.

Figures per configuration: calls (client count and the simulator's), 429s, retries;
for each window the most calls admitted in any window ``(t - W, t]`` as a share of
its limit (``sim.stats()``: ``clients[].windows[].all.max_admitted / limit``); wall
time from the listing call to the last fetch; two floors for the same number of calls
under the configured windows: the steady-rate floor ``N * W / L`` of the binding window
and the schedule floor (the earliest moment the N-th call can be admitted starting from
empty windows, so the first window's worth is spent at once); and the seconds the
callers spent waiting for budget (``client.stats.wait_seconds``, summed over callers:
two callers wait side by side). Results are checked against the simulator's ground
truth (an alert lost or fetched wrong is counted). Nothing is asserted here; the smoke
test in tests/bench asserts zero 429s and every window within its limit on a small run.

``--ledgers redis`` puts the callers on one redis-server ledger (extra
``rate_limit_ledger``), as workers on several hosts would share it; ``--shares 0.5``
shows what the static split of per-host ledgers costs a lone busy host.

The margin (``rate_limit_margin_seconds``) widens every window: the limiter admits at
most L calls per W + margin. At real windows 1 s is 1.7 % of a minute; scaled 20x the
minute window is 3 s and 1 s widens it by a third, so the scaled run pays for the
margin much more than production would. The schedule floor with the margin
(``floor+m``) shows what the limiter can reach at best.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

# bench/__init__ puts plugins/ and include/ on the path (also for `python -m bench.client_budget`).
from bench import IMPORT_DIRS, REAL_RATE_LIMITS, REPO, scaled_rate_limits, tidy_seconds  # noqa: E402,F401
INTERVAL_START, INTERVAL_END = "2026-01-05T00:00:00Z", "2026-01-06T00:00:00Z"
WORKER_FLAG = "--worker"
READY = "ready"


# --------------------------------------------------------------------------- arithmetic


def rate_floor(calls: int, windows: Sequence[Sequence[float]]) -> float:
    """Seconds for ``calls`` at the steady rate of the binding (slowest) window."""
    return max(calls * seconds / limit for limit, seconds in windows)


def schedule_floor(calls: int, windows: Sequence[Sequence[float]], margin: float = 0.0) -> float:
    """When the last of ``calls`` can be admitted at the earliest, the first at 0.

    Greedy is optimal for sliding windows: call k goes as soon as, for every window
    [L, W], call k - L has left it, i.e. at ``t[k - L] + W`` (``(t - W, t]`` is open
    on the left). ``margin`` widens every window as the client's limiter does.
    """
    if calls <= 0:
        return 0.0
    times = [0.0] * calls
    for k in range(calls):
        times[k] = max([0.0] + [times[k - int(limit)] + seconds + margin
                                for limit, seconds in windows if k >= limit])
    return times[-1]


# --------------------------------------------------------------------------- worker


def worker_main(argv: Sequence[str]) -> int:
    """One caller: ``--worker RESULT_FILE``. Builds the client, says READY, reads its
    batches (one JSON line on stdin), fetches them and writes the result file."""
    (result_file,) = argv
    import logging

    from mde_pipeline.airflow.hooks import MdeHook
    from mde_pipeline.api.fetch import fetch_batch_ips

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    quiet = logging.getLogger("bench.client_budget.worker")  # per-batch progress is not needed here
    quiet.setLevel(logging.WARNING)
    hook = MdeHook()
    client = hook.get_client()
    try:
        print(READY, flush=True)
        line = sys.stdin.readline()
        if not line:
            return 1  # the parent gave up
        batches = json.loads(line)
        results = [result for batch in batches for result in fetch_batch_ips(client, batch, logger=quiet)]
        done_at = time.time()
        stats = asdict(client.stats.snapshot())
    finally:
        hook.close()
    Path(result_file).write_text(
        json.dumps({"results": results, "stats": stats, "done_at": done_at}),
        encoding="utf-8",
    )
    return 0


# --------------------------------------------------------------------------- one configuration


@dataclass(frozen=True)
class Configuration:
    callers: int
    margin: float
    ledger: str = "sqlite"  # or "redis": a redis-server shared by every caller, as by every host
    share: float = 1.0  # rate_limit_share: the static split a per-host ledger needs


def run_configuration(
    configuration: Configuration,
    *,
    alerts: int,
    rate_limits: list[list[float]],
    workdir: Path,
    batch_size: int = 100,
    seed: int = 1,
    worker_timeout: float | None = None,
) -> dict[str, Any]:
    """Run one configuration on a fresh simulator and ledger; return its figures."""
    from mde_simulator.process import SimulatorProcess

    workdir.mkdir(parents=True, exist_ok=True)
    ledger_dir = workdir / "ledger"
    airflow_home = workdir / "airflow_home"
    airflow_home.mkdir(exist_ok=True)
    with contextlib.ExitStack() as stack:
        sim = stack.enter_context(SimulatorProcess(
            workdir / "sim", alerts=alerts, rate_limits=rate_limits, seed=seed,
            start=INTERVAL_START, end=INTERVAL_END,
        ))  # fmt: skip
        extra = {"rate_limit_ledger_dir": str(ledger_dir), "rate_limit_margin_seconds": configuration.margin,
                 "timeout": 30, "rate_limit_share": configuration.share}
        if configuration.ledger == "redis":
            from local_redis import RedisServer

            extra["rate_limit_ledger"] = stack.enter_context(RedisServer(workdir / "redis")).url
        env = {**os.environ, **sim.env(**extra)}
        env["PYTHONPATH"] = os.pathsep.join([str(d) for d in IMPORT_DIRS] + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env["AIRFLOW_HOME"] = str(airflow_home)  # a worker must not touch a real Airflow home
        workers = [_start_worker(index, workdir, env) for index in range(configuration.callers)]
        try:
            for worker in workers:
                _wait_ready(worker)
            listing_started = time.time()
            listing, listing_stats = _list(sim.connection_uri(ca_bundle=sim.ca_bundle, **extra))
            from mde_pipeline.airflow.batching import make_batches

            batches = make_batches(listing.alerts, batch_size=batch_size)
            for index, worker in enumerate(workers):
                worker["process"].stdin.write(json.dumps(batches[index :: len(workers)]) + "\n")
                worker["process"].stdin.close()
            timeout = worker_timeout or 300 + 3 * schedule_floor(alerts + 1, rate_limits, configuration.margin)
            outputs = [_finish_worker(worker, timeout) for worker in workers]
        finally:
            for worker in workers:
                _stop_worker(worker)
        stats = sim.stats()
        truth = sim.ground_truth()

    results = [result for output in outputs for result in output["results"]]
    client_id = sim.info["client_id"]
    (budget,) = [c for c in stats["clients"] if c["client_id"] == client_id]
    sim_calls = sum(n for endpoint in ("list", "ips", "alert") for n in stats["calls"].get(endpoint, {}).values())
    calls = listing_stats["calls"] + sum(o["stats"]["calls"] for o in outputs)
    done_at = max(o["done_at"] for o in outputs)
    return {
        "callers": configuration.callers,
        "margin": configuration.margin,
        "ledger": configuration.ledger,
        "share": configuration.share,
        "alerts": len(listing.alerts),
        "batches": len(batches),
        "calls": calls,
        "sim_calls": sim_calls,
        "throttled": stats["throttled"],
        "client_throttled": listing_stats["throttled"] + sum(o["stats"]["throttled"] for o in outputs),
        "retries": listing_stats["retries"] + sum(o["stats"]["retries"] for o in outputs),
        "windows": [
            {"limit": w["limit"], "seconds": w["seconds"], "max_admitted": w["all"]["max_admitted"],
             "max_calls": w["all"]["max_calls"], "share": w["all"]["max_admitted"] / w["limit"]}
            for w in budget["windows"]
        ],
        "wall_seconds": done_at - listing_started,
        "rate_floor": rate_floor(sim_calls, rate_limits),
        "schedule_floor": schedule_floor(sim_calls, rate_limits),
        "schedule_floor_with_margin": schedule_floor(sim_calls, rate_limits, configuration.margin),
        "caller_calls": [o["stats"]["calls"] for o in outputs],
        "wait_seconds": [round(o["stats"]["wait_seconds"], 3) for o in outputs],
        "listing_wait_seconds": listing_stats["wait_seconds"],
        "wrong_or_lost": _wrong_or_lost(listing.alerts, results, truth),
    }


def _list(connection_json: str):
    from mde_pipeline.api.listing import list_interval
    from mde_pipeline.api.client import MdeClient
    from mde_pipeline.api.config import MdeConnectionConfig

    conn = json.loads(connection_json)
    config = MdeConnectionConfig.from_parts(
        host=conn["host"], login=conn["login"], password=conn["password"], extra=conn["extra"], conn_id="mde_default"
    )
    with MdeClient(config) as client:
        listing = list_interval(client, INTERVAL_START, INTERVAL_END)
        return listing, asdict(client.stats.snapshot())


def _wrong_or_lost(listed: list[dict], results: list[dict], truth: dict) -> int:
    """Alerts of the ground truth not listed, listed but not fetched (or twice), or
    fetched with another status or other IPs."""
    expected = truth["alerts"]
    by_id: dict[str, dict] = {}
    bad = 0
    for result in results:
        if result["alert_id"] in by_id:
            bad += 1  # fetched twice
        by_id[result["alert_id"]] = result
    bad += len(set(expected) ^ {a["id"] for a in listed})
    bad += len(set(expected) ^ set(by_id))
    for alert_id, result in by_id.items():
        want = expected.get(alert_id)
        if want is None:
            continue
        if result["status"] != want["ips_status"] or sorted(ip for ip, _ in result["ips"]) != want["ips"]:
            bad += 1
    return bad


def _start_worker(index: int, workdir: Path, env: dict) -> dict:
    result_file = workdir / f"worker{index}.json"
    log_file = workdir / f"worker{index}.stderr.log"
    log = open(log_file, "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.client_budget", WORKER_FLAG, str(result_file)],
        cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
    )
    return {"process": process, "result_file": result_file, "log_file": log_file, "log": log}


def _wait_ready(worker: dict, timeout: float = 180.0) -> None:
    # readline() blocks; a timer ends a worker that hangs in start-up (only ours, by pid).
    timer = threading.Timer(timeout, worker["process"].kill)
    timer.start()
    try:
        line = worker["process"].stdout.readline().strip()
    finally:
        timer.cancel()
    if line != READY:
        raise RuntimeError(f"worker did not start (said {line!r}):\n{_tail(worker['log_file'])}")


def _finish_worker(worker: dict, timeout: float) -> dict:
    try:
        code = worker["process"].wait(timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"worker still running after {timeout:.0f}s:\n{_tail(worker['log_file'])}") from None
    if code != 0:
        raise RuntimeError(f"worker exited with {code}:\n{_tail(worker['log_file'])}")
    return json.loads(worker["result_file"].read_text(encoding="utf-8"))


def _stop_worker(worker: dict) -> None:
    process = worker["process"]
    if process.poll() is None:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()
    worker["log"].close()


def _tail(path: Path, limit: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------- report


def _seconds_label(seconds: float) -> str:
    return f"{tidy_seconds(seconds)}s"


def format_table(rows: list[dict[str, Any]]) -> str:
    """One line per configuration; windows as 'max admitted/limit (share)'."""
    window_heads = [f"max in {_seconds_label(w['seconds'])}" for w in rows[0]["windows"]] if rows else []
    heads = ["ledger", "share", "margin", "callers", "calls", "sim calls", "429", "retries", *window_heads,
             "wall s", "floor s", "floor+m s", "wall/floor", "N*W/L s", "budget wait s", "wrong/lost"]
    lines = []
    for row in rows:
        waits = row["wait_seconds"]
        wait = f"{sum(waits):.1f}" + (f" ({' + '.join(f'{w:.1f}' for w in waits)})" if len(waits) > 1 else "")
        lines.append([
            row["ledger"], f"{row['share']:g}", f"{row['margin']:g}", str(row["callers"]), str(row["calls"]), str(row["sim_calls"]),
            str(row["throttled"]), str(row["retries"]),
            *[f"{w['max_admitted']}/{w['limit']} ({w['share']:.0%})" for w in row["windows"]],
            f"{row['wall_seconds']:.1f}", f"{row['schedule_floor']:.1f}", f"{row['schedule_floor_with_margin']:.1f}",
            f"{row['wall_seconds'] / row['schedule_floor']:.2f}", f"{row['rate_floor']:.1f}",
            wait, str(row["wrong_or_lost"]),
        ])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(heads)]
    render = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([render(heads), render(["-" * w for w in widths]), *map(render, lines)])


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench client_budget", description=__doc__.split("\n")[0])
    parser.add_argument("--alerts", type=int, default=2000)
    parser.add_argument("--scale", type=float, default=20.0,
                        help="divide the real windows [[100,60],[1500,3600]] by this (default 20)")
    parser.add_argument("--rate-limits", type=json.loads, default=None,
                        help="windows as JSON, e.g. '[[100,3],[1500,180]]' (overrides --scale)")
    parser.add_argument("--callers", default="1,2", help="comma list of concurrent caller processes")
    parser.add_argument("--margins", default="1.0", help="comma list of rate_limit_margin_seconds values")
    parser.add_argument("--ledgers", default="sqlite", help="comma list of ledgers: sqlite, redis")
    parser.add_argument("--shares", default="1", help="comma list of rate_limit_share values")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str]) -> int:
    argv = list(argv)
    if argv[:1] == [WORKER_FLAG]:
        return worker_main(argv[1:])
    args = _parse_args(argv)
    rate_limits = args.rate_limits or scaled_rate_limits(args.scale)
    configurations = [
        Configuration(int(c), float(m), ledger, float(share))
        for ledger in args.ledgers.split(",") for share in args.shares.split(",")
        for m in args.margins.split(",") for c in args.callers.split(",")
    ]
    scale_note = "" if args.rate_limits else f" (real windows / {args.scale:g})"
    print(f"client_budget: {args.alerts} alerts, windows {json.dumps(rate_limits)}{scale_note}, "
          f"batches of {args.batch_size}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench_client_budget_"))
    # This process imports Airflow (operators) too: keep it off any real Airflow home.
    os.environ.setdefault("AIRFLOW_HOME", str(workdir / "airflow_home"))
    rows = []
    try:
        for number, configuration in enumerate(configurations):
            print(f"  running ledger={configuration.ledger} share={configuration.share:g} "
                  f"callers={configuration.callers} margin={configuration.margin:g}s ...", flush=True)
            started = time.monotonic()
            row = run_configuration(configuration, alerts=args.alerts, rate_limits=rate_limits,
                                    workdir=workdir / f"run{number}", batch_size=args.batch_size, seed=args.seed)
            print(f"  ... done in {time.monotonic() - started:.0f}s", flush=True)
            rows.append(row)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(format_table(rows))
    print()
    print("calls = client attempts (listing + /ips, retries included); sim calls = what the simulator counted;")
    print("max in W = most calls admitted in any window (t-W, t] / limit; wall = listing start to last fetch;")
    print("floor = the physical floor: earliest the N-th call can be admitted from empty windows (a window's worth")
    print("goes at once); floor+m = the same with every window widened by the margin (the limiter's best);")
    print("N*W/L = N calls at the binding window's steady rate (no initial burst);")
    print("budget wait = seconds the callers slept for budget (summed: callers wait side by side).")
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
