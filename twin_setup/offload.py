"""Offloaded configurations that sensors can read: a short-lived, read-only user delegation SAS for one blob.

A configuration too large for the twin lies in the private container `device-configurations` (records.py); the twin
carries `onboarding.configurationUrl`, that blob's URL with a user delegation SAS, `configurationUrlExpiresAt`, and
`configurationHash`, the SHA-256 the sensor checks the bytes against. Why this mechanism (docs/architecture.md 5):
the container stays private, the sensor needs nothing but HTTPS, and the credential is signed with the app's managed
identity, never an account key (the account has shared key access disabled; a user delegation SAS still works).

The SAS (Microsoft Learn "Create a user delegation SAS"; docs/contracts.md 5): `sp=r` (read), `sr=b` (this one blob),
`spr=https`, `st` a few minutes back for clock skew, `se` CONFIGURATION_LINK_SECONDS ahead, signed with a user
delegation key ("Get User Delegation Key": Microsoft Entra authorization only, start and expiry within 7 days of the
current time) that is cached and reused while it outlives the SAS it signs. The key needs
Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action at account scope: the app's Storage
Blob Data Owner includes it (infra/modules/rbac.bicep). A SAS is a credential: it is never logged or emitted
(shared.storage.redact_url).

Refresh: the timer refresh_configuration_links (functions.py) finds, per hub, the twins whose link expires within
CONFIGURATION_LINK_REFRESH_SECONDS (or that carry a link without an expiry, written before links were signed) with one
paged server-side query, and writes a fresh link with the adapter's conditional PATCH (If-Match on the etag the query
returned; a 412 waits for the next run). The configuration hash is left as it is: a new link is not a new
configuration, so a sensor does not apply again; it uses the new URL the next time it fetches.

| setting | default | meaning |
|---|---|---|
| CONFIGURATION_LINK_SECONDS | 86400 | lifetime of a configuration link (60 s to 7 days) |
| CONFIGURATION_LINK_REFRESH_SECONDS | 21600 | the timer renews links that expire within this (less than the lifetime) |
| CONFIGURATION_LINK_REFRESH_BUDGET_SECONDS | 120 | one timer run's retry budget (shared/retry.py) |
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from shared import telemetry, times
from shared.config import SettingError, Settings
from shared.iothub import DeviceGone, HubRefused, IotHub, PreconditionFailed, Twin, twin_patch
from shared.retry import RetryBudget, RetryPolicy, TransientError
from shared.storage import redact_url
from shared.tags import ONBOARDING, section
from twin_setup.records import configuration_blob_name

log = logging.getLogger(__name__)

MAX_KEY_LIFETIME = dt.timedelta(days=7)  # "Get User Delegation Key": start and expiry within 7 days of now
CLOCK_SKEW = dt.timedelta(minutes=5)  # st back by this much: Microsoft warns of clock skew for a start of "now"
URL, EXPIRES, HASH = "configurationUrl", "configurationUrlExpiresAt", "configurationHash"
_HASH = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class LinkPolicy:
    lifetime: dt.timedelta = dt.timedelta(hours=24)
    refresh_margin: dt.timedelta = dt.timedelta(hours=6)
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(attempts=4, budget_s=120))


def load_link_policy(settings: Settings) -> LinkPolicy:
    lifetime = settings.number("CONFIGURATION_LINK_SECONDS", 86400, minimum=60)
    margin = settings.number("CONFIGURATION_LINK_REFRESH_SECONDS", 21600, minimum=0)
    if lifetime > (MAX_KEY_LIFETIME - CLOCK_SKEW).total_seconds():
        raise SettingError("app setting CONFIGURATION_LINK_SECONDS must be under 7 days (a user delegation key's "
                           f"limit), got {lifetime:g}")
    if margin >= lifetime:
        raise SettingError(f"app setting CONFIGURATION_LINK_REFRESH_SECONDS ({margin:g}) must be less than "
                           f"CONFIGURATION_LINK_SECONDS ({lifetime:g})")
    budget = settings.number("CONFIGURATION_LINK_REFRESH_BUDGET_SECONDS", 120, minimum=1)
    return LinkPolicy(dt.timedelta(seconds=lifetime), dt.timedelta(seconds=margin),
                      RetryPolicy(attempts=4, budget_s=budget))


@dataclass(frozen=True)
class SignedLink:
    url: str  # the blob's URL with its SAS: a credential
    expires_at: str  # ISO-8601 UTC (shared/times.py), the SAS's se

    def __repr__(self) -> str:  # never the SAS
        return f"SignedLink({redact_url(self.url)!r}, expires_at={self.expires_at!r})"


# -- pure ---------------------------------------------------------------------------------------------------------
def sas_window(now: dt.datetime, policy: LinkPolicy, key_expiry: dt.datetime | None = None
               ) -> tuple[dt.datetime, dt.datetime]:
    """(st, se) of a link made now: started CLOCK_SKEW ago, whole seconds, never past the signing key's expiry."""
    now = now.replace(microsecond=0)
    expiry = now + policy.lifetime
    if key_expiry is not None:
        expiry = min(expiry, key_expiry)
    return now - CLOCK_SKEW, expiry


def key_window(now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """(start, expiry) of a user delegation key requested now: the longest the service grants, less the skew margin,
    so that one key signs links for days."""
    now = now.replace(microsecond=0)
    return now - CLOCK_SKEW, now + MAX_KEY_LIFETIME - CLOCK_SKEW


def refresh_query(cutoff: str) -> str:
    """Twins with a link that expires before cutoff, or one without an expiry (written before links were signed).
    cutoff is our own ISO-8601 timestamp (times.iso_utc), which compares as a string (contracts.md 3.5)."""
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", cutoff):
        raise ValueError(f"not an ISO-8601 UTC timestamp: {cutoff!r}")
    path = f"properties.desired.{ONBOARDING}"
    return (f"SELECT * FROM devices WHERE {path}.state = 'configured' AND IS_DEFINED({path}.{URL}) AND "  # noqa: S608
            f"(NOT IS_DEFINED({path}.{EXPIRES}) OR {path}.{EXPIRES} < '{cutoff}')")  # IoT Hub query; cutoff checked


def needs_refresh(desired: dict[str, Any], cutoff: str) -> str | None:
    """The configuration hash whose link is to be renewed, or None (no link, not ours, still valid past cutoff).
    Read again from the twin, not trusted from the query: the hash must look like ours before it names a blob."""
    onboarding = section(desired, ONBOARDING)
    config_hash = onboarding.get(HASH)
    if onboarding.get("state") != "configured" or not onboarding.get(URL):
        return None
    if not isinstance(config_hash, str) or not _HASH.fullmatch(config_hash):
        return None
    expires = onboarding.get(EXPIRES)
    if isinstance(expires, str) and times.parse_utc(expires) is not None and expires >= cutoff:
        return None
    return config_hash


def link_patch(link: SignedLink) -> dict[str, Any]:
    """The desired-properties PATCH of a renewed link: URL and expiry only, so configurationHash is unchanged."""
    return twin_patch(desired={ONBOARDING: {URL: link.url, EXPIRES: link.expires_at}})


# -- signing -------------------------------------------------------------------------------------------------------
class ConfigurationLinks:
    """Signs read-only links to blobs of one container with a cached user delegation key (thread-safe).

    service_factory: a BlobServiceClient authenticated with the app's identity (shared.storage.token_blob_service)."""

    def __init__(self, service_factory: Callable[[], Any], container: str, policy: LinkPolicy,
                 now: Callable[[], dt.datetime] = times.utc_now):
        self._service_factory = service_factory
        self.container = container
        self.policy = policy
        self._now = now
        self._lock = threading.Lock()
        self._key: Any = None
        self._key_expiry: dt.datetime | None = None
        self._container_url: str | None = None

    def _delegation_key(self, now: dt.datetime) -> tuple[Any, dt.datetime]:
        """The cached key while it outlives a full-length link made now; otherwise a new one."""
        from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError

        with self._lock:
            if self._key is None or self._key_expiry is None or self._key_expiry < now + self.policy.lifetime:
                start, expiry = key_window(now)
                try:
                    self._key = self._service_factory().get_user_delegation_key(start, expiry)
                except (ClientAuthenticationError, HttpResponseError) as exc:
                    status = getattr(exc, "status_code", None)
                    if status in (401, 403) or isinstance(exc, ClientAuthenticationError):
                        log.error("no user delegation key (%s): the app's identity needs generateUserDelegationKey "
                                  "on the storage account (Storage Blob Data Owner/Reader or Blob Delegator)", status)
                    raise TransientError(f"user delegation key: {type(exc).__name__} {status or ''}".strip()) \
                        from exc
                except AzureError as exc:
                    raise TransientError(f"user delegation key: {type(exc).__name__}") from exc
                self._key_expiry = expiry
            return self._key, self._key_expiry

    def sign(self, blob_name: str) -> SignedLink:
        """A link that lets its holder read this one blob over HTTPS until it expires, and do nothing else."""
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        now = self._now()
        key, key_expiry = self._delegation_key(now)
        start, expiry = sas_window(now, self.policy, key_expiry)
        service = self._service_factory()
        token = generate_blob_sas(service.account_name, self.container, blob_name, user_delegation_key=key,
                                  permission=BlobSasPermissions(read=True), start=start, expiry=expiry,
                                  protocol="https")
        if self._container_url is None:  # a BlobClient per link would cost about 1 ms (its pipeline)
            self._container_url = service.get_container_client(self.container).url.rstrip("/")
        url = f"{self._container_url}/{quote(blob_name, safe='~/')}"  # as the SDK's BlobClient.url quotes it
        return SignedLink(f"{url}?{token}", times.iso_utc(expiry))

    def for_configuration(self, device_id: str, config_hash: str) -> SignedLink:
        return self.sign(configuration_blob_name(device_id, config_hash))


# -- refresh -------------------------------------------------------------------------------------------------------
@dataclass
class RefreshReport:
    found: int = 0
    refreshed: int = 0
    conflicts: int = 0  # the twin changed since the query (412): the next run sees it again
    gone: int = 0
    failed_hubs: list[str] = field(default_factory=list)


class LinkRefresher:
    """Renews configuration links before they expire, per hub, with one retry budget per run."""

    def __init__(self, hub: IotHub, hosts: tuple[str, ...], links: ConfigurationLinks | None,
                 now: Callable[[], dt.datetime] = times.utc_now, sleep: Callable[[float], None] = time.sleep):
        self.hub = hub
        self.hosts = hosts
        self.links = links
        self._now = now
        self._sleep = sleep

    def run(self) -> RefreshReport:
        if self.links is None:
            log.info("configuration links are not signed here (Blob over plain HTTP): nothing to renew")
            return RefreshReport()
        started = time.perf_counter()
        policy = self.links.policy
        budget = RetryBudget(policy.retry, sleep=self._sleep)
        cutoff = times.iso_utc(self._now() + policy.refresh_margin)
        report = RefreshReport()
        for host in self.hosts:
            try:
                for twin in self.hub.query(host, refresh_query(cutoff), budget=budget):
                    report.found += 1
                    self._refresh(host, twin, cutoff, budget, report)
            except TransientError as exc:  # this hub now; the others still get their turn, the next run retries
                log.warning("configuration links on %s: %s", host, exc.reason)
                report.failed_hubs.append(host)
        telemetry.emit("configuration_links", (time.perf_counter() - started) * 1000, found=report.found,
                       refreshed=report.refreshed, conflicts=report.conflicts, gone=report.gone,
                       failedHubs=len(report.failed_hubs))
        return report

    def _refresh(self, host: str, twin: Twin, cutoff: str, budget: RetryBudget, report: RefreshReport) -> None:
        config_hash = needs_refresh(twin.desired, cutoff)
        if config_hash is None:
            return
        link = self.links.for_configuration(twin.device_id, config_hash)  # type: ignore[union-attr]
        try:
            self.hub.update_twin(host, twin.device_id, link_patch(link), twin.etag, budget)
        except PreconditionFailed:
            report.conflicts += 1
            return
        except DeviceGone:
            report.gone += 1
            return
        except HubRefused as refused:  # HubAccessDenied (not a HubRefused) propagates: the run fails, loudly
            log.warning("configuration link of %s not renewed: %s", twin.device_id, refused.error_code)
            return
        report.refreshed += 1
        log.info("configuration link of %s renewed until %s", twin.device_id, link.expires_at)
