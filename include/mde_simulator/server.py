"""The HTTPS server: routing, the MDE API, the Entra endpoints and the control plane.

Order of checks on an API call (what a client observes):
  401 bad/missing/expired token  (not counted against any rate limit)
  429 over a limit               (counted: calling during a throttle prolongs it)
  403 token without the role     (counted)
  fault (5xx, drop, slow, malformed), then 400 / 404 / 200   (counted)
"""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import ssl
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from . import config as cfg
from . import tls
from .alerts import AlertStore
from .entra import Entra, EntraError, TokenError, load_certificate
from .faults import PROXY_404_PAGE, Faults, malformed_ips_body, malformed_list_body
from .lateness import Lateness
from .odata import ODataError, parse_query, update_time_bounds
from .rate_limit import SlidingWindowLimiter
from .stats import Stats
from .timeutil import (TICKS_PER_SECOND, format_ticks, format_timespan, now_ticks,
                       parse_cli_time, parse_iso)

MDE_JSON = "application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8"
ENTRA_JSON = "application/json; charset=utf-8"
MAX_BODY = 1 << 20


def mde_error(code: str, message: str) -> dict:
    """The API's error body; `target` is the correlation id support asks for."""
    return {"error": {"code": code, "message": message, "target": str(uuid.uuid4())}}


class Simulator:
    """Everything the handlers share; built once per process from the parsed arguments."""

    def __init__(self, args):
        args.tenant_id = args.tenant_id.strip().lower()  # the canonical GUID (a token's tid)
        self.args = args
        self.state_dir: Path = args.state_dir
        self.base_url = ""
        self.next_link = args.next_link
        self.default_top = args.default_top
        self.advance_rate = args.advance_rate
        now = parse_cli_time(args.now) if getattr(args, "now", None) else None
        self.lateness = Lateness(args.seed, args.late_share, args.late_minutes, now)
        self.allow_remote_control = args.allow_remote_control
        self.log_requests = args.log_requests
        self.ground_truth_path = self.state_dir / "ground_truth.json"

        end = parse_cli_time(args.end) if args.end else (now_ticks() // TICKS_PER_SECOND) * TICKS_PER_SECOND
        start = parse_cli_time(args.start) if args.start else end - 24 * 3600 * TICKS_PER_SECOND
        self.store = AlertStore(
            seed=args.seed, count=args.alerts, start=start, end=end, tenant_id=args.tenant_id,
            burst_share=args.burst_share, empty_ips_rate=args.empty_ips_rate,
            missing_ips_rate=args.missing_ips_rate, invalid_ip_rate=args.invalid_ip_rate,
            vanish_rate=args.vanish_rate, profile=getattr(args, "profile", "flat"))
        self.lateness.late = dict(self.store.late_minutes)  # the profile's late alerts
        self.entra = Entra(scopes=[*cfg.DEFAULT_SCOPES, *args.extra_scopes],
                           token_lifetime=args.token_lifetime)
        self.entra.register(args.client_id, args.tenant_id, args.client_secret, cfg.ROLES_FULL,
                            [Path(p).read_bytes() for p in args.client_cert_pem])
        self.entra.register(args.limited_client_id, args.tenant_id, args.limited_client_secret,
                            cfg.ROLES_LIMITED)
        for client in args.client:
            self._register(client)
        if args.tenant_domain:
            self.entra.add_domain(args.tenant_domain, args.tenant_id)
        self.limiter = SlidingWindowLimiter(args.rate_limits, args.limit_scope)
        self.faults = Faults(args.seed, fault_5xx=args.fault_5xx, fault_slow=args.fault_slow,
                             slow_seconds=args.slow_seconds, fault_drop=args.fault_drop,
                             fault_malformed=args.fault_malformed,
                             fault_trickle=args.fault_trickle,
                             trickle_seconds=args.trickle_seconds,
                             fault_endpoints=args.fault_endpoints)
        if self.store.poison_fields:  # the profile's rare poison (the ground truth is unchanged)
            self.faults.configure(poison_fields=self.store.poison_fields)
        self.stats = Stats()
        self._advance_rng = random.Random(args.seed * 31337 + 11)
        self._advance_lock = threading.Lock()
        self._gt_dirty = threading.Event()
        self._gt_lock = threading.Lock()
        self._stopping = threading.Event()

    def _register(self, client: dict) -> None:
        self.entra.register(client["client_id"], client.get("tenant_id") or self.args.tenant_id,
                            client.get("client_secret"), client["roles"], client["certificates"])

    # ------------------------------------------------------------ ground truth file
    def catch_up(self) -> None:
        """What the profile scheduled up to the clock happens now (alerts, new versions)."""
        if self.store.pending() and self.store.apply_due(self.lateness.clock()):
            self.mark_ground_truth_dirty()

    def write_ground_truth(self) -> None:
        self.catch_up()
        with self._gt_lock:
            self._gt_dirty.clear()
            self.store.write_ground_truth(self.ground_truth_path)

    def ground_truth_writer(self) -> None:
        """Coalesces rewrites caused by --advance-rate (many small changes)."""
        while not self._stopping.is_set():
            if self._gt_dirty.wait(0.5) and not self._stopping.is_set():
                time.sleep(0.1)
                self.write_ground_truth()

    def mark_ground_truth_dirty(self) -> None:
        self._gt_dirty.set()

    # ------------------------------------------------------------ config
    def settings(self) -> dict:
        return {
            **self.faults.settings(),
            "invalid_ip_rate": self.store.invalid_ip_rate,
            "vanish_rate": self.store.vanish_rate,
            "advance_rate": self.advance_rate,
            **self.lateness.settings(),
            "rate_limits": [[limit, _number(seconds)] for limit, seconds in self.limiter.windows],
            "limit_scope": self.limiter.scope,
            "token_lifetime": self.entra.token_lifetime,
            "next_link": self.next_link,
            "default_top": self.default_top,
            "extra_scopes": [s for s in self.entra.scopes if s not in cfg.DEFAULT_SCOPES],
            "entra_400": self.entra.refuse_400,
            "clients": self.entra.clients(),
        }

    def apply(self, update: dict) -> dict:
        """Change settings at run time; all-or-nothing (ValueError leaves them as they were)."""
        clean = cfg.validate_runtime(update)
        # Everything that can still fail is checked before anything changes.
        self.faults.check(**{k: v for k, v in clean.items() if k.startswith("fault_")})
        known = {c["client_id"] for c in self.entra.clients()}
        known |= {c["client_id"] for c in clean.get("clients", [])}
        for client in clean.get("clients", []):
            for pem in client["certificates"]:
                load_certificate(pem)
        for client_id, pems in clean.get("client_certificates", {}).items():
            if client_id not in known:
                raise ValueError(f"unknown client {client_id!r}")
            for pem in pems:
                load_certificate(pem)
        fault_keys = {k: v for k, v in clean.items()
                      if k.startswith("fault_")
                      or k in ("slow_seconds", "trickle_seconds", "retry_after_script", "proxy_404",
                               "poison_fields", "extra_fields", "ips_fail", "ips_non_string")}
        if fault_keys:
            self.faults.configure(**fault_keys)
        if "rate_limits" in clean or "limit_scope" in clean:
            self.limiter.configure(clean.get("rate_limits"), clean.get("limit_scope"))
        if "token_lifetime" in clean:
            self.entra.token_lifetime = clean["token_lifetime"]
        if "entra_400" in clean:
            self.entra.refuse_400 = clean["entra_400"]
        if "next_link" in clean:
            self.next_link = clean["next_link"]
        if "default_top" in clean:
            self.default_top = clean["default_top"]
        if "advance_rate" in clean:
            self.advance_rate = clean["advance_rate"]
        if "late_share" in clean:
            self.lateness.share = clean["late_share"]
        if "late_minutes" in clean:
            self.lateness.minutes = clean["late_minutes"]
        if "now" in clean:
            self.lateness.now = clean["now"]
            if self.store.pending():
                self.write_ground_truth()
        if "extra_scopes" in clean:
            self.entra.scopes = [*cfg.DEFAULT_SCOPES, *clean["extra_scopes"]]
        for client in clean.get("clients", []):
            self._register(client)
        for client_id, pems in clean.get("client_certificates", {}).items():
            for pem in pems:
                self.entra.add_certificate(client_id, pem)
        if clean.get("revoke_tokens"):
            self.entra.revoke_all()
        if "vanish_rate" in clean or "invalid_ip_rate" in clean:
            self.store.set_rates(vanish_rate=clean.get("vanish_rate"),
                                 invalid_ip_rate=clean.get("invalid_ip_rate"))
            self.write_ground_truth()
        return self.settings()

    def advance_after_listing(self, alert_ids: list[str]) -> None:
        """--advance-rate: each alert just listed moves to 'now' with that probability."""
        if not self.advance_rate or not alert_ids:
            return
        with self._advance_lock:
            chosen = [a for a in alert_ids if self._advance_rng.random() < self.advance_rate]
        if chosen:
            self.store.advance(ids=chosen, to_ticks=now_ticks())
            self.mark_ground_truth_dirty()

    def ready_info(self, port: int) -> dict:
        return {
            "base_url": self.base_url,
            "authority_host": self.base_url,
            "tenant_id": self.args.tenant_id,
            "tenant_domain": self.args.tenant_domain,
            "client_id": self.args.client_id,
            "client_secret": self.args.client_secret,
            "ca_bundle": str(self.state_dir / "ca.pem"),
            "stats_url": f"{self.base_url}/_sim/stats",
            "ground_truth": str(self.ground_truth_path),
            "pid": os.getpid(),
            "port": port,
            "rate_limits": [[limit, _number(seconds)] for limit, seconds in self.limiter.windows],
            "limit_scope": self.limiter.scope,
            "limited_client_id": self.args.limited_client_id,
            "limited_client_secret": self.args.limited_client_secret,
            "token_url": f"{self.base_url}/{self.args.tenant_id}/oauth2/v2.0/token",
            "alerts": len(self.store),
            "start": format_ticks(self.store.start),
            "end": format_ticks(self.store.end),
        }


def _number(value: float):
    return int(value) if float(value).is_integer() else value


class Dropped(Exception):
    """Close the connection without writing a response (fault 'drop')."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mde-simulator/1.0"
    sys_version = ""
    timeout = 60          # idle keep-alive connections give their thread back
    disable_nagle_algorithm = True   # headers and body go out in separate writes
    sim: Simulator        # set on the subclass made in serve()
    _recorded = True      # errors raised before _dispatch (bad request line) are not recorded

    # --------------------------------------------------------------- plumbing
    def setup(self):
        # The TLS handshake runs here, in the connection's own thread, not in accept().
        self.request.settimeout(self.timeout)
        try:
            self.request.do_handshake()
        except ssl.SSLError:  # e.g. the client does not trust the CA: counted, for tests of "no retry"
            self.sim.stats.record_tls_handshake_failure()
            raise
        super().setup()

    def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's signature
        if self.sim.log_requests:
            sys.stderr.write("%s %s\n" % (self.address_string(), format % args))

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def _send(self, status: int, body: bytes, content_type: str, headers=None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD" and self._trickle_seconds:
            self._trickle(body)
        elif self.command != "HEAD":
            self.wfile.write(body)

    def _trickle(self, body: bytes) -> None:
        """Fault 'trickle': the body in small pieces spread over trickle_seconds, so no single
        read waits long (a read timeout never fires) but the answer takes that long."""
        self.wfile.flush()
        pieces = [body[i:i + 4] for i in range(0, len(body), 4)] or [b""]
        pause = self._trickle_seconds / len(pieces)
        for piece in pieces:
            time.sleep(pause)
            self.wfile.write(piece)
            self.wfile.flush()

    def _json(self, status: int, payload, content_type=MDE_JSON, headers=None) -> None:
        self._send(status, json.dumps(payload, separators=(",", ":")).encode(), content_type,
                   headers)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raise ValueError("chunked request bodies are not supported; send Content-Length")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("request body too large")
        return self.rfile.read(length) if length else b""

    # --------------------------------------------------------------- routing
    def _dispatch(self, method: str) -> None:
        self._endpoint = "unknown"
        self._client_id = None
        self._status = None
        self._arrival = None
        self._trickle_seconds = 0.0
        self._recorded = False
        split = urlsplit(self.path)
        self._method, self._raw_path = method, split.path
        # Split the raw path first, then decode each segment: an id holding '%2F' or '..'
        # stays one segment and can never reach another route.
        segments = [unquote(s) for s in split.path.split("/")[1:]]
        self._query_pairs = parse_qsl(split.query, keep_blank_values=True)
        try:
            self._route(method, segments, split)
        except Dropped:
            self._record("dropped")
            self.close_connection = True
            try:
                self.request.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError):
            self.close_connection = True
        finally:
            if not self._recorded:
                self._record(self._status or "client_gone")

    def send_response(self, code, message=None):
        # Record before the client can see the answer, so /_sim/requests never lags it.
        self._status = code
        if not self._recorded:
            self._record(code)
        super().send_response(code, message)

    def _record(self, status) -> None:
        self._recorded = True
        if self._endpoint != "control":
            self.sim.stats.record_request(
                self._endpoint, status, self._method, self._raw_path, self._client_id,
                at=self._arrival,
                request_id=self.headers.get("x-ms-client-request-id")
                or self.headers.get("client-request-id"))

    def _route(self, method: str, segments: list[str], split) -> None:
        if segments and segments[0] == "_sim":
            self._endpoint = "control"
            return self._control(method, segments[1:])
        api = segments[1:] if segments and segments[0] == "api" else segments
        if api and api[0] == "alerts":
            if len(api) == 1 or (len(api) == 2 and api[1] == ""):
                return self._api(method, "list", None)
            if len(api) == 2:
                return self._api(method, "alert", api[1])
            if len(api) == 3 and api[2] == "ips":
                return self._api(method, "ips", api[1])
        if segments[:3] == ["common", "discovery", "instance"] and method == "GET":
            self._endpoint = "instance_discovery"
            return self._instance_discovery()
        if len(segments) == 4 and segments[1:] == ["v2.0", ".well-known", "openid-configuration"] \
                or len(segments) == 3 and segments[1:] == [".well-known", "openid-configuration"]:
            self._endpoint = "openid_configuration"
            return self._entra(lambda: self.sim.entra.openid_configuration(
                self.sim.base_url, segments[0]), method, "GET")
        if len(segments) in (3, 4) and segments[1] == "discovery" and segments[-1] == "keys":
            self._endpoint = "jwks"
            return self._entra(lambda: (self.sim.entra.check_tenant(segments[0]),
                                        self.sim.entra.jwks())[1], method, "GET")
        if len(segments) == 4 and segments[1:] == ["oauth2", "v2.0", "token"]:
            self._endpoint = "token"
            return self._token(method, segments[0])
        self._json(404, mde_error("ResourceNotFound", f"No route for {method} {split.path}."))

    # --------------------------------------------------------------- Entra
    def _entra(self, produce, method: str, allowed: str) -> None:
        if method != allowed:
            return self._json(405, {"error": "invalid_request",
                                    "error_description": f"Use {allowed}."}, ENTRA_JSON)
        try:
            self._json(200, produce(), ENTRA_JSON)
        except EntraError as exc:
            self._json(exc.status, exc.body, ENTRA_JSON)

    def _instance_discovery(self) -> None:
        # Only reached if a client points instance discovery at the simulator itself.
        params = dict(self._query_pairs)
        authority = params.get("authorization_endpoint", "")
        host = urlsplit(self.sim.base_url).netloc
        tenant = urlsplit(authority).path.strip("/").split("/")[0] if authority else "common"
        self._json(200, {
            "tenant_discovery_endpoint":
                f"{self.sim.base_url}/{tenant}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [{"preferred_network": host, "preferred_cache": host,
                          "aliases": [host]}],
        }, ENTRA_JSON)

    def _token(self, method: str, tenant: str) -> None:
        correlation = self.headers.get("client-request-id")
        if method != "POST":
            return self._json(405, EntraError(405, "invalid_request", 900561,
                                              "The endpoint only accepts POST requests.",
                                              correlation).body, ENTRA_JSON)
        try:
            form = {k: v for k, v in parse_qsl(self._read_body().decode("utf-8", "replace"),
                                               keep_blank_values=True)}
        except ValueError as exc:
            return self._json(400, EntraError(400, "invalid_request", 900144, str(exc),
                                              correlation).body, ENTRA_JSON)
        self._client_id = form.get("client_id")
        try:
            token = self.sim.entra.issue_token(self.sim.base_url, tenant, form, correlation)
        except EntraError as exc:
            self.sim.stats.record_token(False)
            return self._json(exc.status, exc.body, ENTRA_JSON,
                              {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})
        self.sim.stats.record_token(True)
        self._json(200, token, ENTRA_JSON,
                   {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})

    # --------------------------------------------------------------- MDE API
    def _api(self, method: str, endpoint: str, alert_id: str | None) -> None:
        sim = self.sim
        self._endpoint = endpoint
        if method != "GET":
            return self._json(405, mde_error("MethodNotAllowed",
                                             f"The requested resource does not support http "
                                             f"method '{method}'."))
        if endpoint == "ips" and sim.faults.proxied_404(alert_id):
            # A proxy in front of the service: no auth check, not counted by the service.
            sim.stats.record_fault("proxy_404")
            return self._send(404, PROXY_404_PAGE, "text/html")
        try:
            claims = sim.entra.check_bearer(self.headers.get("Authorization"))
        except TokenError as exc:
            return self._json(401, mde_error("Unauthorized", str(exc)), MDE_JSON,
                              {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        self._client_id = claims.client_id
        decision = sim.limiter.admit(claims.client_id, claims.tenant_id, endpoint)
        self._arrival = decision.at
        sim.stats.record_api_call(claims.client_id, claims.tenant_id, endpoint, decision.at,
                                  decision.admitted)
        if not decision.admitted:
            limit, seconds = decision.window
            return self._json(429, mde_error(
                "429", f"API calls quota exceeded! maximum allowed {limit} per "
                       f"{format_timespan(seconds)}"), MDE_JSON,
                {"Retry-After": str(decision.retry_after)})
        try:
            sim.entra.check_roles(claims, endpoint)
        except TokenError as exc:
            return self._json(403, mde_error("Forbidden", str(exc)))
        scripted = sim.faults.scripted(endpoint, claims.tenant_id)
        if scripted:
            sim.stats.record_scripted(claims.client_id, claims.tenant_id, decision.at, scripted["status"])
            return self._scripted(scripted)
        fault = sim.faults.draw(endpoint)
        if fault:
            sim.stats.record_fault(fault)
        if fault == "drop":
            raise Dropped()
        if fault in ("500", "503"):
            code = "InternalServerError" if fault == "500" else "ServiceUnavailable"
            return self._json(int(fault), mde_error(
                code, "An error occurred while processing the request. Please try again later."))
        if fault == "slow":
            time.sleep(sim.faults.slow_seconds)
        if fault == "trickle":
            self._trickle_seconds = sim.faults.trickle_seconds
        malformed = fault == "malformed"
        sim.catch_up()
        if endpoint == "list":
            return self._list(malformed)
        if endpoint == "alert":
            return self._alert(alert_id, malformed)
        return self._ips(alert_id, malformed)

    def _scripted(self, answer: dict) -> None:
        """retry_after_script: a 429 or 503 with the Retry-After exactly as scripted."""
        status, value = answer["status"], answer["retry_after"]
        self.sim.stats.record_fault(f"scripted_{status}")
        headers = {} if value is None else {"Retry-After": value}
        if status == 429:
            body = mde_error("429", "API calls quota exceeded! maximum allowed 100 per 00:01:00")
        else:
            body = mde_error("ServiceUnavailable", "The service is temporarily unavailable.")
        self._json(status, body, MDE_JSON, headers)

    def _list(self, malformed: bool) -> None:
        sim = self.sim
        try:
            query = parse_query(self._query_pairs)
        except ODataError as exc:
            return self._json(400, mde_error("BadRequest", str(exc)))
        # One consistent view: --advance-rate may move alerts from other threads.
        with sim.store.lock:
            if query.filter is not None:
                low, low_inc, high, high_inc = update_time_bounds(query.filter)
                candidates = sim.store.range_by_update(low, low_inc, high, high_inc)
                candidates = [a for a in candidates if query.filter.matches(_field_getter(a))]
            else:
                candidates = sim.store.snapshot()
            candidates = [a for a in candidates if sim.lateness.visible(a.id, a.last_update)]
            ordered = _order(candidates, query.orderby)
            top = query.top if query.top is not None else sim.default_top
            page = ordered[query.skip: query.skip + top]
            value = [sim.faults.poisoned(sim.store.to_json(a, query.expand_evidence)) for a in page]
        context = f"{sim.base_url}/api/$metadata#Alerts"
        if malformed:
            body = malformed_list_body(context, value)
            self._send(200, body, MDE_JSON)
        else:
            payload = {"@odata.context": context, "value": value}
            if sim.next_link and query.skip + len(page) < len(ordered) and page:
                payload["@odata.nextLink"] = self._next_link(query.skip + len(page))
            self._json(200, payload)
        sim.advance_after_listing([a.id for a in page])

    def _next_link(self, skip: int) -> str:
        pairs = [(k, v) for k, v in self._query_pairs if k.lower() != "$skip"]
        pairs.append(("$skip", str(skip)))
        query = urlencode(pairs, quote_via=quote, safe="$:,'()")
        return f"{self.sim.base_url}{urlsplit(self.path).path}?{query}"

    def _alert(self, alert_id: str, malformed: bool) -> None:
        sim = self.sim
        alert = sim.store.get(alert_id)
        if alert is None or sim.store.vanished(alert):
            return self._json(404, mde_error("ResourceNotFound", f"Alert {alert_id} not found"))
        context = f"{sim.base_url}/api/$metadata#Alerts/$entity"
        if malformed:
            return self._send(200, malformed_list_body(context, [alert.fields]), MDE_JSON)
        self._json(200, {"@odata.context": context, **sim.store.to_json(alert, False)})

    def _ips(self, alert_id: str, malformed: bool) -> None:
        sim = self.sim
        status, strings = sim.store.served_ips(alert_id)
        if status == "not_found":
            return self._json(404, mde_error("ResourceNotFound", f"Alert {alert_id} not found"))
        poison = sim.faults.ips_poison(alert_id)
        if poison == "fail" or status == "error":  # error: the profile's alert whose /ips always fails
            sim.stats.record_fault("ips_fail")
            return self._json(500, mde_error("InternalServerError", "An error occurred while processing the request."))
        context = f"{sim.base_url}/api/$metadata#Ips"
        if malformed:
            return self._send(200, malformed_ips_body(context, strings), MDE_JSON)
        items = [{"id": s} for s in strings] + ([{"id": 17}] if poison == "non_string" else [])
        self._json(200, {"@odata.context": context, "value": items})

    # --------------------------------------------------------------- control plane
    def _control(self, method: str, rest: list[str]) -> None:
        sim = self.sim
        host = self.client_address[0]
        if not (sim.allow_remote_control or host.startswith("127.") or host in ("::1",
                                                                                 "::ffff:127.0.0.1")):
            return self._json(403, {"error": "control plane is loopback-only"}, ENTRA_JSON)
        name = rest[0] if len(rest) == 1 else None
        try:
            body = self._read_body() if method == "POST" else b""
            data = json.loads(body) if body.strip() else {}
        except ValueError as exc:
            return self._json(400, {"error": f"body is not JSON: {exc}"}, ENTRA_JSON)
        windows = sim.limiter.windows
        if method == "GET" and name == "stats":
            snapshot = sim.stats.snapshot(windows)
            snapshot["rate_limits"] = [[limit, _number(s)] for limit, s in windows]
            snapshot["limit_scope"] = sim.limiter.scope
            return self._json(200, snapshot, ENTRA_JSON)
        if method == "GET" and name == "calls":
            return self._json(200, {"clients": sim.stats.call_log()}, ENTRA_JSON)
        if method == "GET" and name == "ground_truth":
            sim.catch_up()
            return self._json(200, sim.store.ground_truth(), ENTRA_JSON)
        if method == "GET" and name == "requests":
            return self._json(200, {"requests": sim.stats.recent_requests()}, ENTRA_JSON)
        if method == "GET" and name == "config":
            return self._json(200, sim.settings(), ENTRA_JSON)
        if method == "GET" and name == "health":
            return self._json(200, {"ok": True, "pid": os.getpid()}, ENTRA_JSON)
        if method == "POST" and name == "config":
            try:
                return self._json(200, sim.apply(data), ENTRA_JSON)
            except ValueError as exc:
                return self._json(400, {"error": str(exc)}, ENTRA_JSON)
        if method == "POST" and name == "reset_stats":
            sim.stats.reset()
            if isinstance(data, dict) and data.get("limiter"):
                sim.limiter.reset()
            return self._json(200, {"ok": True}, ENTRA_JSON)
        if method == "POST" and name == "advance":
            return self._advance(data)
        return self._json(404, {"error": f"no control endpoint {method} /_sim/{'/'.join(rest)}"},
                          ENTRA_JSON)

    def _advance(self, data) -> None:
        sim = self.sim
        if not isinstance(data, dict) or set(data) - {"ids", "count", "to", "add_ip"}:
            return self._json(400, {"error": "body: {ids | count, to?, add_ip?}"}, ENTRA_JSON)
        ids, count = data.get("ids"), data.get("count")
        if (ids is None) == (count is None):
            return self._json(400, {"error": "give exactly one of 'ids' or 'count'"}, ENTRA_JSON)
        if ids is not None and (not isinstance(ids, list)
                                or not all(isinstance(i, str) for i in ids)):
            return self._json(400, {"error": "'ids' must be a list of alert ids"}, ENTRA_JSON)
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                                  or count < 0):
            return self._json(400, {"error": "'count' must be an integer >= 0"}, ENTRA_JSON)
        try:
            to_ticks = parse_iso(data["to"]) if data.get("to") else now_ticks()
        except (ValueError, TypeError) as exc:
            return self._json(400, {"error": f"'to': {exc}"}, ENTRA_JSON)
        try:
            changes = sim.store.advance(ids=ids, count=count, to_ticks=to_ticks,
                                        add_ip=bool(data.get("add_ip")))
        except KeyError as exc:
            return self._json(404, {"error": f"unknown alert id(s) {exc.args[0]}"}, ENTRA_JSON)
        sim.write_ground_truth()
        self._json(200, {"advanced": changes, "version": sim.store.version}, ENTRA_JSON)


def _field_getter(alert):
    """Field accessor used by $filter / $orderby: datetimes as ticks, the rest as served."""
    fields = alert.fields
    ticks = fields["_ticks"]

    def get(name):
        if name == "lastUpdateTime":
            return alert.last_update
        if name in ticks:
            return ticks[name]
        return fields.get(name)
    return get


def _order(alerts: list, orderby: list) -> list:
    """Sort by the $orderby keys, ties by id; no $orderby: alertCreationTime desc, id."""
    if not orderby:
        orderby = [("alertCreationTime", True)]
    elif orderby == [("lastUpdateTime", False)]:
        return alerts  # range_by_update / snapshot already yield (lastUpdateTime, id) order
    ordered = sorted(alerts, key=lambda a: a.id)
    for name, descending in reversed(orderby):
        def key(alert, name=name):
            value = _field_getter(alert)(name)
            # None sorts last ascending (first descending), values never compared to None.
            return (value is None, value if value is not None else 0)
        ordered = sorted(ordered, key=key, reverse=descending)
    return ordered


class SimulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        if isinstance(error, (OSError, ssl.SSLError, TimeoutError, EOFError)):
            return  # clients that reject our CA, time out or hang up: expected in tests
        traceback.print_exc(file=sys.stderr)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


def serve(args) -> int:
    args.state_dir = state_dir = Path(args.state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    ready_path = state_dir / "ready.json"
    ready_path.unlink(missing_ok=True)

    sim = Simulator(args)
    files = tls.generate(state_dir, [*args.san, *([args.public_host] if args.public_host else [])])
    handler = type("BoundHandler", (Handler,), {"sim": sim})
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    server_class = type("Server", (SimulatorHTTPServer,), {"address_family": family})
    httpd = server_class((args.host, args.port), handler)
    httpd.socket = tls.server_context(files).wrap_socket(
        httpd.socket, server_side=True, do_handshake_on_connect=False)
    port = httpd.server_address[1]
    host = args.public_host or args.host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    sim.base_url = f"https://{'[' + host + ']' if ':' in host else host}:{port}"
    sim.write_ground_truth()

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
                     name="http", daemon=True).start()
    threading.Thread(target=sim.ground_truth_writer, name="ground-truth", daemon=True).start()
    _write_json_atomic(ready_path, sim.ready_info(port))
    print(f"mde-simulator listening on {sim.base_url} (state {state_dir})", file=sys.stderr,
          flush=True)
    try:
        while not stop.wait(0.5):
            if args.parent_pid and not _alive(args.parent_pid):
                break
    finally:
        ready_path.unlink(missing_ok=True)
        sim._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        if sim._gt_dirty.is_set():
            sim.write_ground_truth()
    return 0
