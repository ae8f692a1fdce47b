"""Several tenants, several hosts, one Redis ledger: how much of each tenant's budget is used.

    python -m bench tenants_budget [--tenants 3 --hosts 2 --callers 2 --scale 20 --seconds 420]
                                   [--scenarios A,B,C --margin 1.0 --alerts 400 --batch-size 25]

The service limits calls per application AND tenant (real windows 100 / 60 s and
1,500 / 3,600 s; ``--scale 20`` makes them [[100, 3], [1500, 180]]). One simulator
serves the same app registered in ``--tenants`` tenants, each with its own budget (the
simulator keys its windows by (client, tenant)). ``--hosts`` processes stand for worker
hosts; each runs ``--callers`` threads per tenant, every thread with its own MdeClient
(as every pool slot's task has its own), so a tenant's callers on every host share the
tenant's one budget through the ledger. Each tenant's interval is listed once (as the
DAG's list task does) and its batches are fetched over and over until the run's time is
up (``--seconds``), so every budget stays saturated; every fetched IP set is checked
against the simulator's ground truth.

Scenarios (each on a fresh simulator, ledger and hosts):

A  every host busy for every tenant, one redis-server ledger. Target: each tenant's use
   >= 0.97 with 0 throttled calls.
B  host 1 busy, the others idle: the shared Redis ledger, then a SQLite ledger per host
   with the static share ``rate_limit_share = 1/hosts`` (what per-host ledgers need).
   Target: use 1.0 vs 1/hosts.
C  as A, and a scripted 429 (``Retry-After: --retry-after``) for tenant 1's next call
   during the measured span: tenant 1's callers on every host wait it out (its calls
   pause), the other tenants' use stays >= 0.97.

Figures per tenant, from the simulator's own record of every call's arrival
(``GET /_sim/calls``): calls in the run, 429s from the service's windows, 429s the
clients saw (C's scripted one included), the most calls admitted in any window
``(t - W, t]`` / its limit, and the **use**: the time-averaged share of the binding
window's limit (the one with the lowest calls per second, the hour) filled over the
measured span ``[go + W, stop]``, i.e. ``mean over t of calls in (t - W, t] / L``; from
``go + W`` on every window lies inside the busy run, so an ideal caller scores 1.0 and
the margin costs about ``m / (W + m)``. wall = go to the tenant's last call; floor = the
earliest the same number of calls can all be admitted from empty windows (a window's
worth at once); budget wait = seconds the tenant's callers slept for budget (summed).
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
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

# bench/__init__ puts plugins/ and include/ on the path (also for `python -m bench.tenants_budget`).
from bench import IMPORT_DIRS, REPO, scaled_rate_limits, tidy_seconds  # noqa: E402
from bench.client_budget import INTERVAL_END, INTERVAL_START, READY, schedule_floor

HOST_FLAG = "--host"
TENANT_SECRET = "bench~tenant-{}-secret"
STOP_GRACE_SECONDS = 0.3  # a host writes its figures this long after the stop time


# --------------------------------------------------------------------------- arithmetic


def window_use(arrivals: Sequence[float], limit: int, seconds: float, start: float, end: float) -> float:
    """Mean over t in [start, end] of (calls in (t - seconds, t]) / limit.

    A call at ``a`` is in the window for t in [a, a + seconds): the integral of the
    count is the sum of those intervals clipped to [start, end]."""
    if end <= start:
        raise ValueError(f"empty span [{start}, {end}]")
    filled = sum(max(0.0, min(a + seconds, end) - max(a, start)) for a in arrivals)
    return filled / ((end - start) * limit)


def binding_window(windows: Sequence[Sequence[float]]) -> tuple[int, float]:
    """The window with the fewest calls per second: the one a saturated caller meets."""
    limit, seconds = min(windows, key=lambda w: w[0] / w[1])
    return int(limit), float(seconds)


def longest_pause(arrivals: Sequence[float], start: float, end: float) -> float:
    """The longest gap between consecutive calls that begins in [start, end]."""
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:]) if start <= a <= end]
    return max(gaps, default=0.0)


# --------------------------------------------------------------------------- one host


def host_main(argv: Sequence[str]) -> int:
    """``--host SPEC RESULT``: build the callers, say READY, read "go stop" on stdin, fetch
    until stop, write the figures and exit (a caller may still sleep for budget)."""
    spec_file, result_file = argv
    import logging

    from mde_pipeline.api.client import MdeClient
    from mde_pipeline.api.config import MdeConnectionConfig
    from mde_pipeline.api.fetch import fetch_batch_ips

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    quiet = logging.getLogger("bench.tenants_budget.host")
    spec = json.loads(Path(spec_file).read_text(encoding="utf-8"))
    tenants = []
    for tenant in spec["tenants"]:
        conn = json.loads(tenant["connection"])
        clients = [
            MdeClient(MdeConnectionConfig.from_parts(host=conn["host"], login=conn["login"], password=conn["password"],
                                                     extra=conn["extra"], conn_id=f"mde_{tenant['name']}"))
            for _ in range(tenant["callers"])
        ]  # fmt: skip
        batches = tenant["batches"]
        tenants.append({"name": tenant["name"], "clients": clients, "batches": batches, "next": 0,
                        "lock": threading.Lock(), "results": [], "errors": []})
    print(READY, flush=True)
    line = sys.stdin.readline()
    if not line:
        return 1
    go, stop = map(float, line.split())

    class Stop(Exception):
        pass

    def caller(tenant: dict, client: Any) -> None:
        def keep(result: dict) -> None:
            tenant["results"].append([result["alert_id"], result["status"], sorted(ip for ip, _ in result["ips"])])
            if time.time() >= stop:
                raise Stop

        time.sleep(max(0.0, go - time.time()))
        try:
            while time.time() < stop:
                with tenant["lock"]:  # the tenant's callers on this host take turns through its batches
                    batch = tenant["batches"][tenant["next"] % len(tenant["batches"])]
                    tenant["next"] += 1
                fetch_batch_ips(client, batch, logger=quiet, on_result=keep)
        except Stop:
            pass
        except Exception as exc:  # reported by the parent, which fails the run
            tenant["errors"].append(f"{type(exc).__name__}: {exc}"[:500])

    for tenant in tenants:
        for client in tenant["clients"]:
            threading.Thread(target=caller, args=(tenant, client), daemon=True).start()
    time.sleep(max(0.0, stop + STOP_GRACE_SECONDS - time.time()))
    figures = []
    for tenant in tenants:
        snapshots = [client.stats.snapshot() for client in tenant["clients"]]
        figures.append({
            "name": tenant["name"], "callers": len(snapshots), "results": list(tenant["results"]),
            "errors": list(tenant["errors"]), "calls": sum(s.calls for s in snapshots),
            "throttled": sum(s.throttled for s in snapshots), "retries": sum(s.retries for s in snapshots),
            "wait_seconds": sum(s.wait_seconds for s in snapshots),
        })  # fmt: skip
    Path(result_file).write_text(json.dumps({"tenants": figures}), encoding="utf-8")
    sys.stdout.flush()
    os._exit(0)  # callers still asleep in the limiter must not hold the run


# --------------------------------------------------------------------------- one scenario


@dataclass(frozen=True)
class Scenario:
    name: str
    ledger: str  # "redis" (one for every host) or "sqlite" (one per host)
    share: float  # rate_limit_share
    busy_hosts: tuple[int, ...]
    throttled_tenant: int | None = None  # C: this tenant gets a scripted 429


def scenarios(names: Sequence[str], hosts: int) -> list[Scenario]:
    every = tuple(range(hosts))
    table = {
        "A": [Scenario("A", "redis", 1.0, every)],
        "B": [Scenario("B", "redis", 1.0, (0,)), Scenario("B", "sqlite", 1.0 / hosts, (0,))],
        "C": [Scenario("C", "redis", 1.0, every, throttled_tenant=0)],
    }
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}; known: A, B, C")
    return [scenario for name in names for scenario in table[name]]


def tenant_ids(home_tenant: str, count: int) -> list[str]:
    """The simulator's own tenant first, then fixed made-up ones."""
    return [home_tenant] + [str(uuid.uuid5(uuid.NAMESPACE_URL, f"mde-bench-tenant-{n}")) for n in range(1, count)]


def run_scenario(scenario: Scenario, *, tenants: int, hosts: int, callers: int, rate_limits: list[list[float]],
                 seconds: float, margin: float, alerts: int, batch_size: int, retry_after: int, workdir: Path,
                 seed: int = 1) -> dict[str, Any]:
    """Run one scenario on a fresh simulator, ledger and hosts; return its figures."""
    from mde_simulator.process import SimulatorProcess

    workdir.mkdir(parents=True, exist_ok=True)
    limit, window = binding_window(rate_limits)
    if seconds <= window:
        raise ValueError(f"--seconds must be longer than the binding window ({window:g}s) to measure a span")
    with contextlib.ExitStack() as stack:
        sim = stack.enter_context(SimulatorProcess(workdir / "sim", alerts=alerts, rate_limits=rate_limits, seed=seed,
                                                   start=INTERVAL_START, end=INTERVAL_END))  # fmt: skip
        app = sim.info["client_id"]
        ids = tenant_ids(sim.info["tenant_id"], tenants)
        sim.configure(clients=[{"client_id": app, "client_secret": TENANT_SECRET.format(n), "tenant_id": tenant}
                               for n, tenant in enumerate(ids) if n])  # fmt: skip
        ledger = "sqlite"
        if scenario.ledger == "redis":
            from local_redis import RedisServer

            ledger = stack.enter_context(RedisServer(workdir / "redis")).url

        def connection(host: int, n: int) -> str:
            return sim.connection_uri(
                password=TENANT_SECRET.format(n) if n else None, tenant_id=ids[n], ca_bundle=sim.ca_bundle,
                rate_limit_ledger=ledger, rate_limit_ledger_dir=str(workdir / f"host{host}" / "ledger"),
                rate_limit_margin_seconds=margin, rate_limit_share=scenario.share, timeout=30,
            )  # fmt: skip

        batches = [_listed_batches(connection(0, n), batch_size) for n in range(tenants)]
        processes = []
        try:
            for host in range(hosts):
                spec = {"tenants": [
                    {"name": f"t{n + 1}", "connection": connection(host, n),
                     "callers": callers if host in scenario.busy_hosts else 0,
                     # Hosts start at different batches (they cycle through all of them).
                     "batches": batches[n][host * len(batches[n]) // hosts:] + batches[n][: host * len(batches[n]) // hosts]}
                    for n in range(tenants)
                ]}  # fmt: skip
                processes.append(_start_host(host, spec, workdir, sim.env()))
            for process in processes:
                _wait_ready(process)
            go = time.time() + 0.5
            stop = go + seconds
            for process in processes:
                process["popen"].stdin.write(f"{go!r} {stop!r}\n")
                process["popen"].stdin.close()
            if scenario.throttled_tenant is not None:
                # In the measured span, after the first window's worth has left.
                throttle_at = go + window + (seconds - window) / 4
                time.sleep(max(0.0, throttle_at - time.time()))
                sim.configure(retry_after_script=[{"status": 429, "retry_after": str(retry_after),
                                                   "tenant_id": ids[scenario.throttled_tenant]}])
            outputs = [_finish_host(process, stop - time.time() + 120) for process in processes]
        finally:
            for process in processes:
                _stop_host(process)
        budgets = {c["tenant_id"]: c for c in sim.calls() if c["client_id"] == app}
        log = {tenant: budget["calls"] for tenant, budget in budgets.items()}
        truth = sim.ground_truth()["alerts"]

    rows = []
    for n, tenant in enumerate(ids):
        calls = [(at, admitted) for at, _, admitted in log.get(tenant, []) if at <= stop]
        in_run = [at for at, admitted in calls if at >= go and admitted]
        per_host = [next(t for t in o["tenants"] if t["name"] == f"t{n + 1}") for o in outputs]
        errors = [e for h in per_host for e in h["errors"]]
        if errors:
            raise RuntimeError(f"tenant t{n + 1}: a caller failed: {errors[0]}")
        wall = (in_run[-1] - go) if in_run else 0.0
        floor = schedule_floor(len(in_run), rate_limits)
        row = {
            "scenario": scenario.name, "ledger": scenario.ledger, "share": scenario.share,
            "busy_hosts": len(scenario.busy_hosts), "hosts": hosts, "tenant": f"t{n + 1}", "tenant_id": tenant,
            "calls": sum(1 for at, _ in calls if at >= go), "host_calls": [h["calls"] for h in per_host],
            "throttled": sum(1 for at, admitted in calls if at >= go and not admitted),
            "client_throttled": sum(h["throttled"] for h in per_host), "retries": sum(h["retries"] for h in per_host),
            "windows": [{"limit": int(lim), "seconds": sec, "max_admitted": _max_in_window([a for a, ok in calls if ok], sec),
                         "max_calls": _max_in_window([a for a, _ in calls], sec)} for lim, sec in rate_limits],
            "use": window_use(in_run, limit, window, go + window, stop), "use_window": [limit, window],
            "wall_seconds": wall, "floor_seconds": floor, "wait_seconds": sum(h["wait_seconds"] for h in per_host),
            "fetched": sum(len(h["results"]) for h in per_host),
            "wrong": sum(_wrong(result, truth) for h in per_host for result in h["results"]),
        }  # fmt: skip
        if n == scenario.throttled_tenant:
            # The call that got the scripted 429, then how long the tenant's calls (every host's) stopped.
            hits = [at for at, _ in budgets.get(tenant, {}).get("scripted", []) if go <= at <= stop]
            pause = longest_pause([at for at, _ in calls], hits[0], hits[0] + retry_after) if hits else None
            row["throttle"] = {"retry_after": retry_after, "at": (hits[0] - go) if hits else None, "pause": pause}
        rows.append(row)
    return {"scenario": scenario.name, "seconds": seconds, "rows": rows}


def _max_in_window(stamps: list[float], seconds: float) -> int:
    from mde_simulator.stats import max_in_window

    return max_in_window(sorted(stamps), seconds) if stamps else 0


def _wrong(result: list, truth: dict) -> int:
    alert_id, status, ips = result
    want = truth.get(alert_id)
    return int(want is None or status != want["ips_status"] or ips != want["ips"])


def _listed_batches(connection_json: str, batch_size: int) -> list[dict]:
    """The tenant's interval, listed as the DAG's list task does, in batches."""
    from mde_pipeline.airflow.batching import make_batches
    from mde_pipeline.api.client import MdeClient
    from mde_pipeline.api.config import MdeConnectionConfig
    from mde_pipeline.api.listing import list_interval

    conn = json.loads(connection_json)
    config = MdeConnectionConfig.from_parts(host=conn["host"], login=conn["login"], password=conn["password"],
                                            extra=conn["extra"], conn_id="mde_list")  # fmt: skip
    with MdeClient(config) as client:
        listing = list_interval(client, INTERVAL_START, INTERVAL_END)
    batches = make_batches(listing.alerts, batch_size=batch_size)
    if not batches:
        raise RuntimeError("the simulator listed no alerts: use --alerts > 0")
    return batches


def _start_host(number: int, spec: dict, workdir: Path, sim_env: dict) -> dict:
    home = workdir / f"host{number}"
    home.mkdir(parents=True, exist_ok=True)
    (home / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
    env = {**os.environ, **sim_env, "AIRFLOW_HOME": str(home / "airflow")}  # never a real Airflow home
    env.pop("AIRFLOW_CONN_MDE_DEFAULT", None)  # each tenant's connection is in the spec
    env["PYTHONPATH"] = os.pathsep.join([str(d) for d in IMPORT_DIRS] + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    log = open(home / "stderr.log", "wb")
    popen = subprocess.Popen(
        [sys.executable, "-m", "bench.tenants_budget", HOST_FLAG, str(home / "spec.json"), str(home / "result.json")],
        cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
    )  # fmt: skip
    return {"popen": popen, "home": home, "log": log}


def _wait_ready(process: dict, timeout: float = 180.0) -> None:
    timer = threading.Timer(timeout, process["popen"].kill)  # only our own child, by its handle
    timer.start()
    try:
        line = process["popen"].stdout.readline().strip()
    finally:
        timer.cancel()
    if line != READY:
        raise RuntimeError(f"host did not start (said {line!r}):\n{_tail(process['home'] / 'stderr.log')}")


def _finish_host(process: dict, timeout: float) -> dict:
    try:
        code = process["popen"].wait(max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"host still running:\n{_tail(process['home'] / 'stderr.log')}") from None
    if code != 0:
        raise RuntimeError(f"host exited with {code}:\n{_tail(process['home'] / 'stderr.log')}")
    return json.loads((process["home"] / "result.json").read_text(encoding="utf-8"))


def _stop_host(process: dict) -> None:
    popen = process["popen"]
    if popen.poll() is None:
        popen.kill()
        popen.wait()
    if popen.stdout is not None:
        popen.stdout.close()
    process["log"].close()


def _tail(path: Path, limit: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------- report


def format_table(results: list[dict[str, Any]]) -> str:
    rows = [row for result in results for row in result["rows"]]
    if not rows:
        return "(no rows)"
    use_head = f"use of {tidy_seconds(rows[0]['use_window'][1])}s"
    heads = ["scen.", "ledger", "share", "busy", "tenant", "calls", "calls by host", "429", "429 seen",
             *[f"max in {tidy_seconds(w['seconds'])}s" for w in rows[0]["windows"]], use_head,
             "wall s", "floor s", "wall/floor", "budget wait s", "fetched", "wrong"]  # fmt: skip
    lines = []
    for row in rows:
        lines.append([
            row["scenario"], row["ledger"], f"{row['share']:.3g}", f"{row['busy_hosts']}/{row['hosts']}", row["tenant"],
            str(row["calls"]), "+".join(str(c) for c in row["host_calls"]), str(row["throttled"]),
            str(row["client_throttled"]),
            *[f"{w['max_admitted']}/{w['limit']}" for w in row["windows"]], f"{row['use']:.3f}",
            f"{row['wall_seconds']:.1f}", f"{row['floor_seconds']:.1f}",
            f"{row['wall_seconds'] / row['floor_seconds']:.2f}" if row["floor_seconds"] else "-",
            f"{row['wait_seconds']:.0f}", str(row["fetched"]), str(row["wrong"]),
        ])  # fmt: skip
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(heads)]
    render = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([render(heads), render(["-" * w for w in widths]), *map(render, lines)])


def summary(results: list[dict[str, Any]]) -> list[str]:
    """One line per scenario against the issue's targets (figures, not assertions)."""
    lines = []
    for result in results:
        rows = result["rows"]
        name = result["scenario"]
        if name == "A":
            lines.append(f"A: lowest tenant use {min(r['use'] for r in rows):.3f} (target >= 0.97), "
                         f"429s from the service {sum(r['throttled'] for r in rows)} (target 0)")
        elif name == "B":
            total = sum(r["use"] for r in rows) / len(rows)
            lines.append(f"B ({rows[0]['ledger']}, share {rows[0]['share']:.3g}): lone busy host, mean tenant use "
                         f"{total:.3f} (Redis target 1.0; static share {1 / rows[0]['hosts']:.2f})")
        elif name == "C":
            (hit,) = [r for r in rows if "throttle" in r]
            others = [r for r in rows if r is not hit]
            throttle = hit["throttle"]
            when = f"+{throttle['at']:.0f}s" if throttle["at"] is not None else "never (no call after the cue)"
            pause = f"{throttle['pause']:.1f}s" if throttle["pause"] is not None else "-"
            lines.append(f"C: {hit['tenant']} got a scripted 429 (Retry-After {throttle['retry_after']}s) at {when}; "
                         f"its calls on every host paused {pause}; its use {hit['use']:.3f}; the other tenants' use "
                         f"{', '.join(format(r['use'], '.3f') for r in others) or '-'} (target >= 0.97), 429s from "
                         f"the service {sum(r['throttled'] for r in rows)}")
    return lines


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench tenants_budget", description=__doc__.split("\n")[0])
    parser.add_argument("--tenants", type=int, default=3)
    parser.add_argument("--hosts", type=int, default=2, help="host processes (default 2)")
    parser.add_argument("--callers", type=int, default=2, help="caller threads per tenant on a busy host")
    parser.add_argument("--scale", type=float, default=20.0,
                        help="divide the real windows [[100,60],[1500,3600]] by this (default 20)")
    parser.add_argument("--rate-limits", type=json.loads, default=None,
                        help="windows as JSON, e.g. '[[100,3],[1500,180]]' (overrides --scale)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="length of each run (default: twice the binding window + 60 s)")
    parser.add_argument("--scenarios", default="A,B,C", help="comma list of A, B, C")
    parser.add_argument("--margin", type=float, default=1.0, help="rate_limit_margin_seconds (default 1.0)")
    parser.add_argument("--alerts", type=int, default=400, help="alerts per tenant's listing (fetched in cycles)")
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--retry-after", type=int, default=None,
                        help="C's scripted Retry-After in seconds (default: a ninth of the binding window)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args(list(argv))
    if args.tenants < 1 or args.hosts < 1 or args.callers < 1:
        parser.error("--tenants, --hosts and --callers must be >= 1")
    return args


def main(argv: Sequence[str]) -> int:
    argv = list(argv)
    if argv[:1] == [HOST_FLAG]:
        return host_main(argv[1:])
    args = _parse_args(argv)
    rate_limits = args.rate_limits or scaled_rate_limits(args.scale)
    limit, window = binding_window(rate_limits)
    seconds = args.seconds or 2 * window + 60
    retry_after = args.retry_after or max(1, round(window / 9))
    chosen = scenarios([s.strip() for s in args.scenarios.split(",") if s.strip()], args.hosts)
    scale_note = "" if args.rate_limits else f" (real windows / {args.scale:g})"
    print(f"tenants_budget: {args.tenants} tenants x {args.hosts} hosts x {args.callers} callers, windows "
          f"{json.dumps(rate_limits)}{scale_note}, {seconds:g}s per run (use measured over the last "
          f"{seconds - window:g}s), margin {args.margin:g}s, {args.alerts} alerts in batches of {args.batch_size}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix="bench_tenants_budget_"))
    os.environ.setdefault("AIRFLOW_HOME", str(workdir / "airflow_home"))  # the listing imports mde_pipeline.airflow
    results = []
    try:
        for number, scenario in enumerate(chosen):
            print(f"  running {scenario.name}: ledger={scenario.ledger} share={scenario.share:.3g} "
                  f"busy hosts={len(scenario.busy_hosts)}/{args.hosts} ...", flush=True)
            started = time.monotonic()
            results.append(run_scenario(
                scenario, tenants=args.tenants, hosts=args.hosts, callers=args.callers, rate_limits=rate_limits,
                seconds=seconds, margin=args.margin, alerts=args.alerts, batch_size=args.batch_size,
                retry_after=retry_after, workdir=workdir / f"run{number}", seed=args.seed,
            ))  # fmt: skip
            print(f"  ... done in {time.monotonic() - started:.0f}s (load average {os.getloadavg()[0]:.1f})", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(format_table(results))
    print()
    print("\n".join(summary(results)))
    print()
    print("calls = the simulator's count in the run (every host); calls by host = each host's client attempts;")
    print("429 = refused by the service's windows; 429 seen = 429s the clients got (C's scripted one included);")
    print(f"max in W = most calls admitted in any (t-W, t] / limit; use of {tidy_seconds(window)}s = mean over the "
          f"measured span of calls in (t-{tidy_seconds(window)}, t] / {limit};")
    print("wall = go to the tenant's last call; floor = earliest that many calls fit from empty windows;")
    print("budget wait = seconds the tenant's callers slept for budget (summed); wrong = IP sets unlike the ground truth.")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
