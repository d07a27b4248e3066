"""Fault profiles for the local stand-ins of Azure (issue 16): one engine, one ASGI middleware, profile files.

A profile (local/fault_profiles/*.json) says, per stand-in ("iothub", "keyvault", "identity", "dps", and
"eventgrid" for the hub emulator's own Event Grid delivery; "storage" and "sql" for what cannot be changed, see
local/storage_proxy.py and local/sql_faults.py), how each operation behaves:

    {"description": "...", "seed": 16,
     "services": {
       "keyvault": {
         "default":    {"latency_ms": [8, 20]},
         "operations": [{"name": "sign", "method": "POST", "path": "/keys/[^/]+/[^/]+/sign$",
                         "latency_ms": [20, 60],
                         "errors": {"429": 0.03, "500": 0.005, "503": 0.01, "reset": 0.005, "hang": 0.002},
                         "hang_s": 20, "retry_after_s": 2}],
         "exempt":     ["^/devices/[^/]+/twin"],
         "outages":    [{"after_s": 60, "for_s": 10, "fault": "503"}]}}}

- An operation is matched by method (optional) and a regular expression searched in the URL path; the first
  that matches wins, else "default". Its `latency_ms` [min, max] is added to every answer (uniform), its `errors`
  are probabilities per fault kind (drawn in that order from one seeded random.Random, so one seed replays the
  same sequence of faults for the same sequence of requests): "429" and "503" answer with `Retry-After:
  retry_after_s`, "500" answers at once, "reset" aborts the connection without an answer (the client sees a reset
  or a closed connection), "hang" holds the request `hang_s` seconds (default 30) before it goes on; a client's
  own timeout should end it first.
- "exempt" paths are never faulted nor delayed (the emulator-only device routes, the counters route), nor is a
  request with the header `x-local-faults: exempt`: the test harness's own reads (local/chaos.py checks twins and
  counts devices with it), so that what is verified is the product under faults, not the verifier.
- "outages" are scheduled windows, in seconds after the stand-in started (`every_s` repeats a window): every
  request that is not exempt gets `fault` (503 by default, or "reset", or "hang") while one is open.

How a stand-in takes a profile: `LOCAL_FAULT_PROFILE` in its environment (a file path, or a profile name in
local/fault_profiles/, e.g. `bad-day`), or `--faults` on the command line of local.iothub and local.keyvault;
create_app/identity_app also take one as an argument (tests). The counts of injected faults are read from
`GET /_faults` on every faulted stand-in (not part of any Azure API): {"service", "profile", "requests",
"injected": {kind: n}, "operations": {name: {kind: n}}}; local/chaos.py sums them for its summary.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("local.faults")
PROFILE_DIR = Path(__file__).resolve().parent / "fault_profiles"
ENV_PROFILE = "LOCAL_FAULT_PROFILE"
COUNTERS_PATH = "/_faults"
EXEMPT_HEADER = "x-local-faults"  # value "exempt": the harness, never faulted
FAULT_KINDS = ("429", "500", "503", "reset", "hang")
# storage: the TCP proxy in front of Azurite (local/storage_proxy.py); sql: a lock held on the SQLite file
# (local/sql_faults.py). Both only where a profile names them: Azurite and SQLite themselves cannot be changed.
SERVICES = ("iothub", "keyvault", "identity", "dps", "eventgrid", "storage", "sql")


class ProfileError(ValueError):
    """A profile file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Operation:
    name: str
    method: str | None = None
    path: re.Pattern | None = None
    latency_ms: tuple[float, float] = (0.0, 0.0)
    errors: tuple[tuple[str, float], ...] = ()
    hang_s: float = 30.0
    retry_after_s: float = 1.0

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (self.path is None or bool(self.path.search(path)))


@dataclass(frozen=True)
class Outage:
    after_s: float
    for_s: float
    fault: str = "503"
    every_s: float | None = None

    def open_at(self, elapsed_s: float) -> bool:
        return window_open(elapsed_s, self.after_s, self.for_s, self.every_s)


def window_open(elapsed_s: float, after_s: float, for_s: float, every_s: float | None) -> bool:
    """A scheduled window (outage, lock): open from after_s for for_s seconds, again every every_s when given."""
    if elapsed_s < after_s:
        return False
    into = elapsed_s - after_s
    if every_s:
        into %= every_s
    return into < for_s


@dataclass(frozen=True)
class ServiceProfile:
    service: str
    profile: str = "none"
    operations: tuple[Operation, ...] = ()
    default: Operation = Operation("default")
    exempt: tuple[re.Pattern, ...] = ()
    outages: tuple[Outage, ...] = ()
    seed: int | None = None

    def operation(self, method: str, path: str) -> Operation | None:
        """The operation a request is, or None when the path is exempt."""
        if path == COUNTERS_PATH or any(p.search(path) for p in self.exempt):
            return None
        return next((op for op in self.operations if op.matches(method, path)), self.default)


@dataclass(frozen=True)
class Decision:
    """What happens to one request: `fault` (None: answered normally) after `delay_s`."""

    operation: str
    fault: str | None = None
    delay_s: float = 0.0
    hang_s: float = 0.0
    retry_after_s: float = 1.0


def _pair(value: Any, where: str) -> tuple[float, float]:
    if value is None:
        return (0.0, 0.0)
    if isinstance(value, (int, float)):
        return (float(value), float(value))
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        low, high = float(value[0]), float(value[1])
        if 0 <= low <= high:
            return (low, high)
    raise ProfileError(f"{where}: latency_ms must be a number or [min, max] with 0 <= min <= max, got {value!r}")


def _errors(value: Any, where: str) -> tuple[tuple[str, float], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ProfileError(f"{where}: errors must be an object of fault kind -> probability")
    unknown = sorted(set(value) - set(FAULT_KINDS))
    if unknown:
        raise ProfileError(f"{where}: unknown fault kind(s) {unknown}; known: {list(FAULT_KINDS)}")
    errors = tuple((kind, float(value[kind])) for kind in FAULT_KINDS if kind in value)
    if any(not 0 <= p <= 1 for _, p in errors) or sum(p for _, p in errors) > 1:
        raise ProfileError(f"{where}: probabilities must be in [0, 1] and sum to at most 1")
    return errors


def _operation(raw: dict, where: str, default_name: str = "default") -> Operation:
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: expected an object")
    try:
        path = re.compile(raw["path"]) if raw.get("path") else None
    except re.error as exc:
        raise ProfileError(f"{where}: path is not a regular expression: {exc}") from None
    return Operation(
        name=str(raw.get("name") or raw.get("path") or default_name),
        method=raw["method"].upper() if raw.get("method") else None,
        path=path,
        latency_ms=_pair(raw.get("latency_ms"), where),
        errors=_errors(raw.get("errors"), where),
        hang_s=float(raw.get("hang_s", 30)),
        retry_after_s=float(raw.get("retry_after_s", 1)),
    )


def service_profile(document: dict, service: str, name: str = "profile") -> ServiceProfile:
    """The part of a profile document for one stand-in (an empty ServiceProfile when it has none)."""
    raw = (document.get("services") or {}).get(service)
    seed = document.get("seed")
    if raw is None:
        return ServiceProfile(service, name, seed=seed)
    where = f"{name}: services.{service}"
    operations = tuple(_operation(op, f"{where}.operations[{i}]") for i, op in enumerate(raw.get("operations") or []))
    outages = []
    for i, outage in enumerate(raw.get("outages") or []):
        fault = str(outage.get("fault", "503"))
        if fault not in FAULT_KINDS:
            raise ProfileError(f"{where}.outages[{i}]: unknown fault {fault!r}")
        outages.append(Outage(float(outage["after_s"]), float(outage["for_s"]), fault,
                              float(outage["every_s"]) if outage.get("every_s") else None))
    try:
        exempt = tuple(re.compile(p) for p in raw.get("exempt") or [])
    except re.error as exc:
        raise ProfileError(f"{where}.exempt: {exc}") from None
    return ServiceProfile(service, name, operations, _operation(raw.get("default") or {}, f"{where}.default"),
                          exempt, tuple(outages), seed)


def profile_path(name_or_path: str) -> Path:
    """A profile file: a path, or the name of one in local/fault_profiles/ ("bad-day" -> bad-day.json)."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".json" and candidate.exists():
        return candidate
    named = PROFILE_DIR / f"{name_or_path}.json"
    if named.exists():
        return named
    known = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.json")))
    raise ProfileError(f"fault profile {name_or_path!r} not found (a .json file, or one of: {known})")


def load_profile(name_or_path: str) -> tuple[str, dict]:
    path = profile_path(name_or_path)
    try:
        document = json.loads(path.read_text())
    except ValueError as exc:
        raise ProfileError(f"{path}: not JSON: {exc}") from None
    unknown = sorted(set(document.get("services") or {}) - set(SERVICES))
    if unknown:
        raise ProfileError(f"{path}: unknown service(s) {unknown}; known: {list(SERVICES)}")
    return path.stem, document


class FaultEngine:
    """Decides each request's fate for one stand-in and counts what it injected. Thread-safe."""

    def __init__(self, profile: ServiceProfile, seed: int | None = None, clock: Callable[[], float] = time.monotonic):
        self.profile = profile
        seed = profile.seed if seed is None else seed
        self._rng = random.Random(seed)
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self.requests = 0
        self.injected: Counter[str] = Counter()
        self.by_operation: dict[str, Counter[str]] = {}

    @classmethod
    def from_profile(cls, name_or_path: str, service: str, **kwargs) -> FaultEngine:
        name, document = load_profile(name_or_path)
        return cls(service_profile(document, service, name), **kwargs)

    @property
    def active(self) -> bool:
        p = self.profile
        return bool(p.operations or p.outages or p.default.errors or p.default.latency_ms[1])

    def decide(self, method: str, path: str) -> Decision | None:
        """None for an exempt path; else the decision (and, when it is a fault, counted)."""
        op = self.profile.operation(method.upper(), path)
        if op is None:
            return None
        with self._lock:
            self.requests += 1
            elapsed = self._clock() - self._started
            outage = next((o for o in self.profile.outages if o.open_at(elapsed)), None)
            delay = self._rng.uniform(*op.latency_ms) / 1000 if op.latency_ms[1] else 0.0
            if outage is not None:
                fault: str | None = outage.fault
                name = "outage"
            else:
                draw, fault, name = self._rng.random(), None, op.name
                for kind, probability in op.errors:
                    if draw < probability:
                        fault = kind
                        break
                    draw -= probability
            if fault is not None:
                self.injected[fault] += 1
                self.by_operation.setdefault(name, Counter())[fault] += 1
        return Decision(name, fault, delay, op.hang_s, op.retry_after_s)

    def counters(self) -> dict[str, Any]:
        with self._lock:
            return {"service": self.profile.service, "profile": self.profile.profile, "requests": self.requests,
                    "injected": dict(self.injected),
                    "operations": {k: dict(v) for k, v in sorted(self.by_operation.items())}}


def engine_from_environment(service: str, explicit: str | None = None) -> FaultEngine | None:
    """The engine for `service` from --faults (explicit) or LOCAL_FAULT_PROFILE; None when neither is set."""
    name = explicit or os.environ.get(ENV_PROFILE)
    if not name:
        return None
    engine = FaultEngine.from_profile(name, service)
    log.warning("%s: fault profile %s loaded (%d operation(s), %d outage(s))", service, engine.profile.profile,
                len(engine.profile.operations), len(engine.profile.outages))
    return engine


# --- the ASGI middleware ------------------------------------------------------------------------------------


def _abort_connection(send) -> bool:
    """Abort the TCP (or TLS) connection under this request without answering. uvicorn's send is a bound method
    of its request-response cycle, which holds the connection's transport; True when it could be aborted."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None or not hasattr(transport, "abort"):
        return False
    transport.abort()
    return True


async def _answer(send, status: int, body: dict, headers: Iterable[tuple[str, str]] = ()) -> None:
    payload = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
           (b"x-local-fault", b"injected")] + [(k.encode(), v.encode()) for k, v in headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


FAULT_BODIES = {
    "429": {"error": {"code": "TooManyRequests", "message": "Injected fault: throttled (local fault profile)"}},
    "500": {"error": {"code": "InternalServerError", "message": "Injected fault (local fault profile)"}},
    "503": {"error": {"code": "ServiceUnavailable", "message": "Injected fault: unavailable (local fault profile)"}},
}


class FaultMiddleware:
    """Pure ASGI middleware: GET /_faults answers the counters; every other HTTP request goes through the engine."""

    def __init__(self, app, engine: FaultEngine, extra: Callable[[], dict] | None = None):
        self.app = app
        self.engine = engine
        self.extra = extra

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if path == COUNTERS_PATH and method == "GET":
            await _answer(send, 200, {**self.engine.counters(), **(self.extra() if self.extra else {})})
            return
        exempt = any(k == EXEMPT_HEADER.encode() and v == b"exempt" for k, v in scope.get("headers") or ())
        decision = None if exempt else self.engine.decide(method, path)
        if decision is None:
            await self.app(scope, receive, send)
            return
        if decision.delay_s:
            await asyncio.sleep(decision.delay_s)
        fault = decision.fault
        if fault is None:
            await self.app(scope, receive, send)
        elif fault == "hang":
            await asyncio.sleep(decision.hang_s)
            await self.app(scope, receive, send)
        elif fault == "reset":
            if _abort_connection(send):
                await asyncio.sleep(0)  # let uvicorn see the connection lost before the app returns
                await asyncio.sleep(0)
                return
            await _answer(send, 503, FAULT_BODIES["503"])  # no transport to abort (another server)
        else:
            headers = [("Retry-After", f"{decision.retry_after_s:g}")] if fault in ("429", "503") else []
            await _answer(send, int(fault), FAULT_BODIES[fault], headers)


def install(app, engine: FaultEngine | None, extra: Callable[[], dict] | None = None):
    """Put the middleware in front of a Starlette app, outermost (it must see uvicorn's own `send` to abort a
    connection), keeping the Starlette object (app.state, routes) for its callers; `extra` adds to the counters
    answer. Returns app."""
    if engine is None:
        return app
    app.middleware_stack = FaultMiddleware(app.build_middleware_stack(), engine, extra)
    app.state.faults = engine
    return app


@dataclass
class FaultSummary:
    """Counters of several stand-ins summed (local/chaos.py)."""

    injected: Counter = field(default_factory=Counter)
    by_service: dict[str, dict] = field(default_factory=dict)

    def add(self, name: str, counters: dict) -> None:
        self.by_service[name] = counters
        self.injected.update(counters.get("injected") or {})

    def line(self) -> str:
        kinds = ", ".join(f"{kind} {self.injected.get(kind, 0)}" for kind in FAULT_KINDS)
        return f"faults injected: {sum(self.injected.values())} ({kinds})"
