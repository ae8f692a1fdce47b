"""Settings of one simulator run: command-line parsing and run-time updates.

The same names are used on the command line (`--fault-5xx`), in POST /_sim/config
(`{"fault_5xx": 0.1}`) and as SimulatorProcess keyword arguments (`fault_5xx=0.1`).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from .timeutil import parse_cli_time

DEFAULT_RATE_LIMITS = [[100, 60], [1500, 3600]]
DEFAULT_TENANT_ID = "8f4c1f5e-2a6b-4c3d-9e8f-0a1b2c3d4e5f"
DEFAULT_CLIENT_ID = "3c9d7a10-5b2e-4f61-8a7c-d1e2f3a4b5c6"
DEFAULT_CLIENT_SECRET = "sim~Secret.0123456789abcdefGHIJ"
DEFAULT_LIMITED_CLIENT_ID = "6a1b2c3d-7e8f-4a5b-9c0d-e1f2a3b4c5d6"
DEFAULT_LIMITED_CLIENT_SECRET = "sim~Limited.9876543210zyxwvuTSRQ"
# Scopes (resource + /.default) the real token service accepts for the MDE API.
DEFAULT_SCOPES = (
    "https://api.securitycenter.microsoft.com/.default",
    "https://securitycenter.onmicrosoft.com/windowsatpservice/.default",
)
FAULT_ENDPOINTS = ("list", "ips", "alert")
ROLES_FULL = ["Alert.Read.All", "Ip.Read.All"]
ROLES_LIMITED = ["Alert.Read.All"]

# Names that POST /_sim/config accepts (beyond the actions below).
RUNTIME_KEYS = (
    "fault_5xx", "fault_slow", "slow_seconds", "fault_drop", "fault_malformed",
    "fault_trickle", "trickle_seconds",
    "fault_endpoints", "invalid_ip_rate", "vanish_rate", "advance_rate", "rate_limits",
    "limit_scope", "token_lifetime", "next_link", "default_top", "extra_scopes",
    "retry_after_script", "proxy_404",
    "poison_fields", "extra_fields", "ips_fail", "ips_non_string",
    "late_share", "late_minutes", "now", "entra_400",
)
SCRIPTED_STATUSES = (429, 503)
RUNTIME_ACTIONS = ("clients", "client_certificates", "revoke_tokens")


def _rate(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number between 0 and 1")
    value = float(value)
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise ValueError(f"{name} must be between 0 and 1, got {value}")
    return value


def parse_rate_limits(value) -> list[list[float]]:
    """[[calls, seconds], ...]: JSON text or a list. Windows sorted by length."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"rate_limits is not JSON: {value!r}") from exc
    if not isinstance(value, list) or not value:
        raise ValueError("rate_limits must be a non-empty list of [calls, seconds]")
    windows = []
    for item in value:
        if (not isinstance(item, (list, tuple)) or len(item) != 2
                or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in item)):
            raise ValueError(f"rate limit {item!r} is not [calls, seconds]")
        calls, seconds = item
        if calls < 1 or int(calls) != calls or seconds <= 0:
            raise ValueError(f"rate limit {item!r}: calls must be a positive integer, seconds > 0")
        windows.append([int(calls), int(seconds) if float(seconds).is_integer() else float(seconds)])
    return sorted(windows, key=lambda w: w[1])


def parse_fault_endpoints(value) -> list[str]:
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError("fault_endpoints must be 'all' or a list of list|ips|alert")
    if "all" in value:
        return list(FAULT_ENDPOINTS)
    unknown = [v for v in value if v not in FAULT_ENDPOINTS]
    if unknown:
        raise ValueError(f"unknown fault endpoint(s) {unknown}; use list, ips, alert or all")
    return sorted(set(value))


def validate_runtime(update: dict) -> dict:
    """Check a POST /_sim/config body; return the normalised settings. ValueError if bad."""
    if not isinstance(update, dict):
        raise ValueError("config body must be a JSON object")
    unknown = sorted(set(update) - set(RUNTIME_KEYS) - set(RUNTIME_ACTIONS))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; known: {sorted(RUNTIME_KEYS + RUNTIME_ACTIONS)}")
    clean = {}
    for key, value in update.items():
        if key in ("fault_5xx", "fault_slow", "fault_drop", "fault_malformed", "fault_trickle",
                   "invalid_ip_rate", "vanish_rate", "advance_rate", "late_share"):
            clean[key] = _rate(key, value)
        elif key == "late_minutes":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError("late_minutes must be a number >= 0")
            clean[key] = float(value)
        elif key == "now":
            # The simulator's clock for late visibility: ISO text, or null for real time.
            if value is not None and not isinstance(value, str):
                raise ValueError("now must be an ISO 8601 time or null")
            clean[key] = None if value is None else parse_cli_time(value)
        elif key in ("slow_seconds", "trickle_seconds"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{key} must be a number >= 0")
            clean[key] = float(value)
        elif key == "fault_endpoints":
            clean[key] = parse_fault_endpoints(value)
        elif key == "rate_limits":
            clean[key] = parse_rate_limits(value)
        elif key == "limit_scope":
            if value not in ("shared", "per-endpoint"):
                raise ValueError("limit_scope must be 'shared' or 'per-endpoint'")
            clean[key] = value
        elif key == "token_lifetime":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError("token_lifetime must be a number of seconds > 0")
            clean[key] = value
        elif key in ("next_link", "revoke_tokens"):
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false")
            clean[key] = value
        elif key == "default_top":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10000:
                raise ValueError("default_top must be an integer between 1 and 10000")
            clean[key] = value
        elif key == "extra_scopes":
            if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
                raise ValueError("extra_scopes must be a list of strings")
            clean[key] = value
        elif key == "retry_after_script":
            clean[key] = parse_retry_after_script(value)
        elif key == "proxy_404":
            if not isinstance(value, bool) and not (
                    isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise ValueError("proxy_404 must be true, false or a list of alert ids")
            clean[key] = value
        elif key in ("poison_fields", "extra_fields"):
            if not isinstance(value, dict) or (key == "poison_fields" and not all(
                    isinstance(k, str) and isinstance(v, dict) for k, v in value.items())):
                raise ValueError(f"{key} must be an object" + (" of alert id -> {field: value}"
                                                             if key == "poison_fields" else ""))
            clean[key] = value
        elif key in ("ips_fail", "ips_non_string"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{key} must be a list of alert ids")
            clean[key] = value
        elif key == "entra_400":
            if value is not None and not (
                    isinstance(value, dict) and set(value) <= {"endpoint", "code"}
                    and value.get("endpoint") in ("metadata", "token")
                    and (value.get("code") is None or (isinstance(value["code"], int)
                                                       and not isinstance(value["code"], bool)))):
                raise ValueError('entra_400 must be null or {"endpoint": "metadata"|"token", '
                                 '"code": AADSTS number|null}')
            clean[key] = None if value is None else {"endpoint": value["endpoint"],
                                                     "code": value.get("code")}
        elif key == "clients":
            if not isinstance(value, list):
                raise ValueError("clients must be a list of objects")
            clean[key] = [validate_client(item) for item in value]
        elif key == "client_certificates":
            if not isinstance(value, dict) or not all(
                    isinstance(v, (str, list)) for v in value.values()):
                raise ValueError("client_certificates must map client_id -> PEM or [PEM, ...]")
            clean[key] = {k: ([v] if isinstance(v, str) else list(v)) for k, v in value.items()}
    fault_total = sum(clean.get(k, 0.0) for k in ("fault_5xx", "fault_slow", "fault_drop", "fault_trickle",
                                                  "fault_malformed"))
    if fault_total > 1.0:
        raise ValueError("fault rates add up to more than 1")
    return clean


def parse_retry_after_script(value) -> list[dict]:
    """[answer, ...]: "<Retry-After>" (a 429) or {"status": 429|503, "retry_after": str|null,
    "tenant_id": str (optional)}.

    The header is sent exactly as given ("999999999", "soon", "-5", "0", an HTTP-date),
    so clients can be tested against values the real service should never send. An answer
    with a ``tenant_id`` goes only to a call of that tenant (the service throttles per app
    and tenant), so one tenant can be throttled while the others go on."""
    if not isinstance(value, list):
        raise ValueError("retry_after_script must be a list of answers")
    answers = []
    for item in value:
        if isinstance(item, str):
            item = {"status": 429, "retry_after": item}
        if (not isinstance(item, dict) or set(item) - {"status", "retry_after", "tenant_id"}
                or item.get("status", 429) not in SCRIPTED_STATUSES
                or not isinstance(item.get("retry_after"), (str, type(None)))
                or any(c in (item.get("retry_after") or "") for c in "\r\n")
                or not isinstance(item.get("tenant_id", ""), str)):
            raise ValueError(f"retry_after_script answer {item!r}: a Retry-After string or "
                             '{"status": 429|503, "retry_after": string|null, "tenant_id": string}')
        answer = {"status": item.get("status", 429), "retry_after": item.get("retry_after")}
        if item.get("tenant_id"):
            answer["tenant_id"] = item["tenant_id"].lower()
        answers.append(answer)
    return answers


def validate_client(item) -> dict:
    if not isinstance(item, dict) or not isinstance(item.get("client_id"), str):
        raise ValueError(f"client {item!r} needs a client_id string")
    allowed = {"client_id", "client_secret", "tenant_id", "roles", "certificates"}
    unknown = set(item) - allowed
    if unknown:
        raise ValueError(f"client has unknown key(s) {sorted(unknown)}")
    roles = item.get("roles", ROLES_FULL)
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise ValueError("client roles must be a list of strings")
    certificates = item.get("certificates", [])
    if isinstance(certificates, str):
        certificates = [certificates]
    return {"client_id": item["client_id"], "client_secret": item.get("client_secret"),
            "tenant_id": item.get("tenant_id"), "roles": roles, "certificates": certificates}


def _rate_arg(text: str) -> float:
    try:
        return _rate("rate", float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _json_client(text: str) -> dict:
    try:
        return validate_client(json.loads(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _rate_limits_arg(text: str):
    try:
        return parse_rate_limits(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _fault_endpoints_arg(text: str):
    try:
        return parse_fault_endpoints(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mde_simulator",
        description=(
            "HTTPS stand-in for Microsoft Entra ID (token endpoint, OIDC discovery) and the "
            "Microsoft Defender for Endpoint API (GET /api/alerts, GET /api/alerts/{id}/ips). "
            "Writes DIR/ca.pem, DIR/ground_truth.json and, once listening, DIR/ready.json."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    server = parser.add_argument_group("server")
    server.add_argument("--state-dir", default=Path(".sim"), type=Path,
                        help="folder for ca.pem, server cert, ground_truth.json, ready.json")
    server.add_argument("--host", default="127.0.0.1", help="address to listen on")
    server.add_argument("--port", type=int, default=0, help="port (0 = pick a free one)")
    server.add_argument("--public-host", default=None,
                        help="host name put into base_url (default: the listen address)")
    server.add_argument("--san", action="append", default=[],
                        help="extra DNS name/IP for the server certificate (repeatable)")
    server.add_argument("--allow-remote-control", action="store_true",
                        help="serve /_sim/* to non-loopback clients too (containers)")
    server.add_argument("--parent-pid", type=int, default=None,
                        help="exit when this process is gone (SimulatorProcess passes its own "
                             "pid so a killed test run leaves no simulator behind)")
    server.add_argument("--log-requests", action="store_true",
                        help="print one line per request to stderr (never headers or bodies)")

    data = parser.add_argument_group("data")
    data.add_argument("--seed", type=int, default=1, help="seed of the data generator and faults")
    data.add_argument("--profile", choices=("flat", "demo"), default="flat",
                      help="flat: every alert its own addresses and device (the tests' data); "
                           "demo: the shape of a tenant (busy hosts, shared services, IOC-like "
                           "addresses, versions over the hours, late alerts, a poison field, "
                           "failing /ips; see demo.py)")
    data.add_argument("--now", default=None,
                      help="start the simulator's clock here (ISO 8601) instead of real time; "
                           "POST /_sim/config {\"now\": ...} moves it")
    data.add_argument("--alerts", type=int, default=200, help="number of alerts to generate")
    data.add_argument("--start", default=None,
                      help="earliest lastUpdateTime (ISO 8601); default: END minus 24 hours")
    data.add_argument("--end", default=None,
                      help="lastUpdateTime upper bound, exclusive (ISO 8601); default: now")
    data.add_argument("--burst-share", type=_rate_arg, default=0.3,
                      help="share of alerts in bursts sharing one exact lastUpdateTime")
    data.add_argument("--empty-ips-rate", type=_rate_arg, default=0.05,
                      help="share of alerts whose /ips answers 200 with an empty value")
    data.add_argument("--missing-ips-rate", type=_rate_arg, default=0.05,
                      help="share of alerts without IPs whose /ips answers 404")
    data.add_argument("--invalid-ip-rate", type=_rate_arg, default=0.0,
                      help="share of alerts with IPs whose /ips also serves invalid IP strings")
    data.add_argument("--vanish-rate", type=_rate_arg, default=0.0,
                      help="share of alerts that are listed but whose /ips answers 404")
    data.add_argument("--advance-rate", type=_rate_arg, default=0.0,
                      help="after each list response, each listed alert moves its "
                           "lastUpdateTime to now with this probability")
    data.add_argument("--late-share", type=_rate_arg, default=0.0,
                      help="share of alerts listable only --late-minutes after their lastUpdateTime")
    data.add_argument("--late-minutes", type=float, default=0.0,
                      help="how late the --late-share alerts become listable")
    data.add_argument("--next-link", action="store_true",
                      help="send @odata.nextLink when more results remain (default: never)")
    data.add_argument("--default-top", type=int, default=10000,
                      help="page size when $top is absent")

    auth = parser.add_argument_group("identity")
    auth.add_argument("--tenant-id", default=DEFAULT_TENANT_ID,
                      help="the main tenant's GUID (any case on the command line; lower case in tokens)")
    auth.add_argument("--tenant-domain", default=None,
                      help="a verified domain name the main tenant also answers to, e.g. "
                           "contoso.onmicrosoft.com (token tid: the GUID)")
    auth.add_argument("--client-id", default=DEFAULT_CLIENT_ID,
                      help="client with Alert.Read.All and Ip.Read.All")
    auth.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET)
    auth.add_argument("--limited-client-id", default=DEFAULT_LIMITED_CLIENT_ID,
                      help="second client with Alert.Read.All only (gets 403 on /ips)")
    auth.add_argument("--limited-client-secret", default=DEFAULT_LIMITED_CLIENT_SECRET)
    auth.add_argument("--client-cert-pem", action="append", type=Path, default=[],
                      help="PEM certificate registered for --client-id (client assertions)")
    auth.add_argument("--client", action="append", type=_json_client, default=[],
                      help='extra client as JSON: {"client_id", "client_secret", "tenant_id", '
                           '"roles": [...], "certificates": [PEM, ...]} (repeatable)')
    auth.add_argument("--token-lifetime", type=float, default=3599,
                      help="access token lifetime in seconds (expires_in)")
    auth.add_argument("--extra-scope", dest="extra_scopes", action="append", default=[],
                      help="another accepted scope, e.g. "
                           "https://securitycenter.onmicrosoft.us/windowsatpservice/.default")

    limits = parser.add_argument_group("rate limits")
    limits.add_argument("--rate-limits", type=_rate_limits_arg, default=DEFAULT_RATE_LIMITS,
                        help="JSON list of [calls, window seconds], e.g. '[[10,1],[50,5]]'")
    limits.add_argument("--limit-scope", choices=("shared", "per-endpoint"), default="shared",
                        help="shared: list and ips calls use one budget per (client, tenant)")

    faults = parser.add_argument_group("faults (shares of eligible API calls, seeded)")
    faults.add_argument("--fault-5xx", type=_rate_arg, default=0.0,
                        help="answer 500 or 503 with the MDE error body")
    faults.add_argument("--fault-slow", type=_rate_arg, default=0.0,
                        help="wait --slow-seconds before answering")
    faults.add_argument("--slow-seconds", type=float, default=30.0)
    faults.add_argument("--fault-trickle", type=_rate_arg, default=0.0,
                        help="send the body a few bytes at a time over --trickle-seconds "
                             "(every read well inside a read timeout)")
    faults.add_argument("--trickle-seconds", type=float, default=30.0)
    faults.add_argument("--fault-drop", type=_rate_arg, default=0.0,
                        help="close the connection without any response")
    faults.add_argument("--fault-malformed", type=_rate_arg, default=0.0,
                        help="answer 200 with unparseable JSON (the doc example's missing quote and '...')")
    faults.add_argument("--fault-endpoints", type=_fault_endpoints_arg, default=list(FAULT_ENDPOINTS),
                        help="endpoints faults apply to: all or comma list of list,ips,alert")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.alerts < 0:
        parser.error("--alerts must be >= 0")
    if not 1 <= args.default_top <= 10000:
        parser.error("--default-top must be between 1 and 10000")
    if args.token_lifetime <= 0:
        parser.error("--token-lifetime must be > 0")
    for name in ("start", "end", "now"):
        value = getattr(args, name)
        if value is not None:
            try:
                parse_cli_time(value)
            except ValueError as exc:
                parser.error(f"--{name}: {exc}")
    if args.start and args.end and parse_cli_time(args.end) <= parse_cli_time(args.start):
        parser.error("--end must be after --start")
    if args.fault_5xx + args.fault_slow + args.fault_drop + args.fault_malformed > 1.0:
        parser.error("fault rates add up to more than 1")
    return args
