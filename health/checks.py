"""Dependency checks for /api/health: each configured dependency answers ok or error with a reason.

Checks run concurrently under one deadline so a hung dependency makes the report slow by at most that
deadline, never unbounded.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

from shared.bootstrap import Services
from shared.retry import RetryPolicy
from shared.storage import BlobStore

log = logging.getLogger(__name__)
REASON_LIMIT = 200
PROBE_RETRY = RetryPolicy(attempts=1)  # a probe reports what it sees; it does not wait out a throttle


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    reason: str | None
    duration_ms: float


def dependency_checks(services: Services) -> dict[str, Callable[[], object]]:
    """Name -> zero-argument probe, for every dependency the settings configure."""
    settings = services.settings
    checks: dict[str, Callable[[], object]] = {
        "sql": lambda: services.database.fetch_one("SELECT COUNT(*) AS facilities FROM facilities"),
        "blob": lambda: services.blob_service.get_container_client(
            settings.templates_container
        ).get_container_properties(),
        "queue": lambda: services.queue_service.get_queue_client(
            settings.security_alerts_queue
        ).get_queue_properties(),
    }
    crls = BlobStore.for_container(lambda: services.blob_service, settings.crl_container)
    for ca in settings.regional_cas:
        checks[f"keyvault:{ca.name}"] = lambda name=ca.name: services.certificates.get_certificate(name)
        checks[f"crl:{ca.name}"] = lambda name=ca.name: crl_published(crls, name)
    hubs = services.iothub(PROBE_RETRY)
    for host in settings.iot_hub_host_names:
        checks[f"iothub:{host}"] = lambda h=host: hubs.device_count(h)
    return checks


def crl_published(store: BlobStore, ca_name: str, now: dt.datetime | None = None) -> None:
    """The CA's CRL blob exists and, by the publisher's metadata, is still in date: without it the webhook refuses
    every device of that CA (crl_unavailable). Reads the blob's properties only, not the CRL (megabytes at scale)."""
    from shared.crl import crl_blob_name, crl_metadata

    found = store.properties(crl_blob_name(ca_name))
    if found is None:
        raise LookupError(f"no CRL blob {crl_blob_name(ca_name)}")
    next_update = crl_metadata(found.metadata).next_update
    if next_update is not None and next_update < (now or dt.datetime.now(dt.UTC)):
        raise ValueError(f"CRL past its nextUpdate {next_update.isoformat()}")


def _reason(exc: BaseException) -> str:
    first_line = (str(exc).strip().splitlines() or [""])[0]
    text = f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__
    return text[:REASON_LIMIT]


def _timed(name: str, probe: Callable[[], object]) -> CheckResult:
    started = time.perf_counter()
    try:
        probe()
    except Exception as exc:  # noqa: BLE001 - a failing probe is a result, not a crash
        return CheckResult(name, False, _reason(exc), (time.perf_counter() - started) * 1000)
    return CheckResult(name, True, None, (time.perf_counter() - started) * 1000)


def run_checks(checks: dict[str, Callable[[], object]], timeout_s: float) -> list[CheckResult]:
    pool = ThreadPoolExecutor(max_workers=max(1, len(checks)), thread_name_prefix="health")
    futures = {name: pool.submit(_timed, name, probe) for name, probe in checks.items()}
    wait(futures.values(), timeout=timeout_s)
    pool.shutdown(wait=False, cancel_futures=True)
    return [
        f.result() if f.done() else CheckResult(name, False, f"timed out after {timeout_s:g}s", timeout_s * 1000)
        for name, f in futures.items()
    ]


def health_report(results: list[CheckResult]) -> tuple[int, dict]:
    """200 when every dependency is ok, else 503; the body lists each one."""
    healthy = all(r.ok for r in results)
    body = {
        "status": "ok" if healthy else "error",
        "components": {
            r.name: {"status": "ok" if r.ok else "error", "durationMs": round(r.duration_ms, 1)}
            | ({"reason": r.reason} if r.reason else {})
            for r in results
        },
    }
    return (200 if healthy else 503), body


def check_all(services: Services) -> tuple[int, dict]:
    """Every configured dependency checked under one deadline: (200 or 503, the report). GET /api/health and
    `onboarding health` both answer with this."""
    from health.settings import check_timeout_s

    return health_report(run_checks(dependency_checks(services), check_timeout_s(services.settings)))


_report_lock = threading.Lock()
_report: tuple[float, tuple[int, dict]] | None = None  # (monotonic expiry, report)
UNHEALTHY_CACHE_S = 1.0  # a failing report is kept for at most this long, so recovery shows (and a start) quickly


def cached_check_all(services_factory=None, clock: Callable[[], float] = time.monotonic) -> tuple[int, dict]:
    """check_all, answered from a report at most HEALTH_CACHE_SECONDS old (a failing one at most
    UNHEALTHY_CACHE_S). One caller at a time computes it: while one request runs the probes, the others wait for its
    report (bounded by the checks' deadline) instead of starting probes of their own. A settings error is a report
    too (503, component `settings`)."""
    global _report
    from shared.bootstrap import services
    from shared.config import SettingError

    current = _report
    if current is not None and current[0] > clock():
        return current[1]
    with _report_lock:
        current = _report
        if current is not None and current[0] > clock():
            return current[1]
        svc = (services_factory or services)()
        try:
            from health.settings import cache_seconds

            ttl = cache_seconds(svc.settings)
            status, body = check_all(svc)
        except SettingError as exc:
            ttl = UNHEALTHY_CACHE_S
            status, body = health_report([CheckResult("settings", False, str(exc), 0.0)])
        if status != 200:
            ttl = min(ttl, UNHEALTHY_CACHE_S)
            failing = sorted(name for name, c in body["components"].items() if c["status"] != "ok")
            log.warning("health: %s failing", ", ".join(failing))
        _report = (clock() + ttl, (status, body))
        return status, body
