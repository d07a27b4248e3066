"""CRL contents and publication. The builder is pure; CrlPublisher does the I/O (SQL -> Key Vault sign -> Blob).

The revocations table is the source of truth. Every CRL lists the CA's revocations (with reason codes and
revocation dates), carries CRLNumber and the authority key identifier, is signed through Key Vault with the CA's
current key and verified, and is stored as the blob `{ca}.crl` of CRL_CONTAINER (DER, application/pkix-crl;
shared/crl.py says where), which is what the webhook reads and what every certificate's CRL Distribution Points
URL serves. Beside it the publisher keeps the certificate of the CA's current key (`{ca}-{key id}.crt`), which
certificates name in their Authority Information Access. Blob Storage has no size cap a CRL can reach (a
100,000-entry CRL is about 5.3 MB; bench/cert_lifecycle.py), so nothing is refused for its size.

Bounded (RFC 5280 3.3): an entry leaves the CRL once its certificate (on record) expired more than one CRL
lifetime ago and a CRL issued after that expiry has listed it; the revocation row stays in SQL.

Publication is safe under concurrency without a lock: the publisher writes with If-Match on the ETag of the CRL it
read (If-None-Match: * for the first one), so a writer holding an older view cannot overwrite a newer CRL; it
reads again and decides again instead. CRL numbers only grow: each CRL takes the number of the one it replaces plus
one, or the clock's seconds when that is more, so neither a CA moved from the Key Vault secrets of earlier releases
nor a lost or restored blob sends the sequence back (the webhook refuses a lower number). After writing, it reads
back (If-None-Match on the ETag it wrote: 304 means nobody wrote since) and, if another CRL is there, checks that
it lists every revocation in SQL; otherwise it publishes again (bounded).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import CRLEntryExtensionOID

from cert_lifecycle.records import CertificateRecords, RevocationRecord
from cert_lifecycle.settings import LifecycleSettings
from cert_lifecycle.signer import SigningError, authority_key_identifier
from shared import telemetry
from shared.audit import AuditWriter
from shared.crl import (
    CA_CERTIFICATE_CONTENT_TYPE,
    CRL_CONTENT_TYPE,
    CrlInvalid,
    CrlMetadata,
    ca_certificate_blob_name,
    crl_blob_name,
    crl_metadata,
    crl_number,
    verify_and_index,
)
from shared.errors import OnboardingError
from shared.serials import serial_int
from shared.storage import BlobChanged, BlobStore
from shared.times import iso_utc

log = logging.getLogger(__name__)
BACKDATE = dt.timedelta(minutes=1)
PUBLISH_ATTEMPTS = 3
# Relying parties and a CDN in front of the container may keep a CRL this long; the webhook reads the blob itself
# (If-None-Match), so this bounds only what third parties see after a revocation.
CACHE_CONTROL = "public, max-age=300"

# RFC 5280 reason codes an operator may give for a device certificate (no CA/AA compromise, no hold).
REASONS: dict[str, x509.ReasonFlags | None] = {
    "unspecified": None,  # RFC 5280: the reasonCode extension SHOULD be absent rather than "unspecified"
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
}


@dataclass(frozen=True)
class CrlEntry:
    serial_number: int
    revoked_at: dt.datetime
    reason: str


@dataclass(frozen=True)
class PublishedCrl:
    ca: str
    number: int | None
    entries: int
    this_update: dt.datetime | None
    next_update: dt.datetime | None
    serials: frozenset[int]
    changed: bool
    size_bytes: int = 0


def crl_entries(records: Iterable[RevocationRecord], now: dt.datetime, keep_after_expiry: dt.timedelta,
                published: PublishedCrl | None = None) -> list[CrlEntry]:
    """The entries of the next CRL. A revoked certificate leaves once it expired more than keep_after_expiry ago,
    but never before a CRL issued after its expiry has listed it (RFC 5280 3.3: "An entry MUST NOT be removed from
    the CRL until it appears on one regularly scheduled CRL issued beyond the revoked certificate's validity
    period"): when the published CRL still lists it and was issued before the expiry, it stays once more.
    Revocations of certificates not on record have no known expiry and stay."""
    entries = []
    for record in records:
        serial = serial_int(record.serial_number)
        if record.not_after is not None and record.not_after + keep_after_expiry < now:
            listed_before_expiry = (published is not None and serial in published.serials
                                    and published.this_update is not None
                                    and published.this_update <= record.not_after)
            if not listed_before_expiry:
                continue
        entries.append(CrlEntry(serial, record.revoked_at, record.reason))
    entries.sort(key=lambda e: (e.revoked_at, e.serial_number))
    return entries


def crl_builder(ca: x509.Certificate, entries: list[CrlEntry], number: int, now: dt.datetime,
                validity: dt.timedelta) -> x509.CertificateRevocationListBuilder:
    """The to-be-signed CRL. Built in one go (adding entries one by one copies the list each time: O(n^2))."""
    reason_extensions = {
        name: [x509.Extension(CRLEntryExtensionOID.CRL_REASON, False, x509.CRLReason(flag))] if flag else []
        for name, flag in REASONS.items()
    }
    revoked = [
        x509.RevokedCertificateBuilder(e.serial_number, e.revoked_at, reason_extensions.get(e.reason, [])).build()
        for e in entries
    ]
    return x509.CertificateRevocationListBuilder(
        issuer_name=ca.subject, last_update=now - BACKDATE, next_update=now + validity,
        extensions=[x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(number)),
                    x509.Extension(x509.AuthorityKeyIdentifier.oid, False, authority_key_identifier(ca))],
        revoked_certificates=revoked)


@dataclass(frozen=True)
class StoredCrl:
    """What the CRL blob holds now, as the publisher reads it."""

    published: PublishedCrl | None  # the valid CRL now in Blob, or None (none, unreadable, expired, other key)
    number: int | None  # the highest CRL number seen, even on an invalid CRL: the next one continues from it
    etag: str | None  # what the next write must match; None: there is no blob yet


class CrlPublisher:
    def __init__(self, store: BlobStore, records: CertificateRecords, audit: AuditWriter,
                 settings: LifecycleSettings, now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)):
        self._store = store
        self._records = records
        self._audit = audit
        self._settings = settings
        self._now = now
        self._ca_certificates_published: set[tuple[str, str]] = set()
        self._last_numbers: dict[str, int] = {}  # the highest number this process gave each CA's CRL
        self._guard = threading.Lock()

    # -- reading --------------------------------------------------------------------------------------------
    def _read(self, name: str, etag: str | None = None):
        try:
            return self._store.read(name, etag=etag)
        except Exception as exc:
            raise OnboardingError("dependency_unavailable", f"Blob read of {name}: {type(exc).__name__}") from exc

    def _parse(self, authority, read) -> StoredCrl:
        if read is None:
            return StoredCrl(None, None, None)
        der = read.data or b""
        number = max(filter(None, [crl_number(der), crl_metadata(read.metadata).number]), default=None)
        try:
            index = verify_and_index(der, authority.certificate, self._now())
        except CrlInvalid as exc:
            # Unreadable, expired, or signed by another key of the CA (just rotated): the next publish replaces it.
            log.warning("CRL of %s in Blob is not valid for its current key: %s", authority.name, exc)
            return StoredCrl(None, number, read.etag)
        published = PublishedCrl(authority.name, index.crl_number, len(index), index.this_update, index.next_update,
                                 index.revoked, changed=False, size_bytes=len(der))
        return StoredCrl(published, number, read.etag)

    def stored(self, authority) -> StoredCrl:
        """The CA's CRL as it is in Blob now."""
        return self._parse(authority, self._read(crl_blob_name(authority.name)))

    def current(self, authority) -> tuple[PublishedCrl | None, int | None]:
        """(the valid CRL now in Blob or None, the highest CRL number seen even on an invalid one)."""
        stored = self.stored(authority)
        return stored.published, stored.number

    def _wanted(self, authority, now: dt.datetime, published: PublishedCrl | None) -> list[CrlEntry]:
        keep = dt.timedelta(hours=self._settings.crl_validity_hours)
        return crl_entries(self._records.revocations(authority.subject), now, keep, published)

    def needs_refresh(self, current: PublishedCrl | None, wanted: list[CrlEntry], now: dt.datetime) -> str | None:
        """Why a new CRL is due, or None."""
        if current is None:
            return "missing or invalid"
        missing = {e.serial_number for e in wanted} - current.serials
        if missing:
            return f"{len(missing)} revocation(s) not listed"
        if current.next_update - now < dt.timedelta(hours=self._settings.crl_refresh_before_hours):
            return "nextUpdate is near"
        return None

    # -- publishing -----------------------------------------------------------------------------------------
    def publish_each(self, cas, actor: str) -> dict[str, PublishedCrl | Exception]:
        """publish() for every regional CA on its own, by name: one CA missing from Key Vault or failing to publish
        must not stop the others' CRLs (each region would be refused once its CRL passed nextUpdate)."""
        outcomes: dict[str, PublishedCrl | Exception] = {}
        for name in cas.names:
            try:
                outcomes[name] = self.publish(cas.by_name(name), actor=actor)
            except Exception as exc:  # noqa: BLE001 - reported per CA to the caller
                log.error("CRL of %s not refreshed: %s", name, exc)
                outcomes[name] = exc
        return outcomes

    def publish(self, authority, *, force_reason: str | None = None, actor: str = "system") -> PublishedCrl:
        """Bring the CA's CRL in Blob up to date with SQL; no-op when it already is (and not forced)."""
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            now = self._now()
            stored = self.stored(authority)
            wanted = self._wanted(authority, now, stored.published)
            reason = force_reason if attempt == 1 and force_reason else self.needs_refresh(stored.published, wanted,
                                                                                          now)
            if reason is None:
                self._publish_ca_certificate(authority)
                return stored.published  # type: ignore[return-value]
            try:
                published, etag = self._issue(authority, wanted, stored, now, reason, actor)
            except BlobChanged:
                log.warning("CRL of %s changed while a new one was made (attempt %d); reading it again",
                            authority.name, attempt)
                force_reason = None
                continue
            if self._read_back_holds(authority, etag, {e.serial_number for e in wanted}):
                self._publish_ca_certificate(authority)
                return published
            log.warning("CRL of %s in Blob lacks revocations after publishing (attempt %d); publishing again",
                        authority.name, attempt)
            force_reason = None
        raise OnboardingError("dependency_unavailable", f"CRL of {authority.name} could not be published consistently")

    def _read_back_holds(self, authority, etag: str, wanted: set[int]) -> bool:
        """Whether the CRL in Blob now lists every wanted revocation: at once when nobody wrote after us (304),
        else by reading what the other writer stored."""
        after = self._read(crl_blob_name(authority.name), etag=etag)
        if after is not None and after.not_modified:
            return True
        found = self._parse(authority, after).published
        return found is not None and wanted <= found.serials

    def _issue(self, authority, entries: list[CrlEntry], stored: StoredCrl, now: dt.datetime, reason: str,
               actor: str) -> tuple[PublishedCrl, str]:
        # CRL numbers only grow (RFC 5280 5.2.3), even past a blob lost or restored from an old backup: the clock's
        # seconds are a floor that no earlier number can exceed (a CA publishes far less than once a second).
        with self._guard:
            number = max(2, int(now.timestamp()), (stored.number or 0) + 1,
                         self._last_numbers.get(authority.name, 0) + 1)
            self._last_numbers[authority.name] = number
        started = time.perf_counter()
        builder = crl_builder(authority.certificate, entries, number, now,
                              dt.timedelta(hours=self._settings.crl_validity_hours))
        try:
            crl = authority.signer.sign_crl(builder)
        except SigningError as exc:
            raise OnboardingError("signing_failed", str(exc)) from None
        except Exception as exc:
            raise OnboardingError("dependency_unavailable", f"Key Vault sign: {type(exc).__name__}") from exc
        der = crl.public_bytes(Encoding.DER)
        metadata = CrlMetadata(authority.name, number, len(entries), crl.last_update_utc,
                               crl.next_update_utc).to_metadata()
        try:
            etag = self._store.write(crl_blob_name(authority.name), der, CRL_CONTENT_TYPE, etag=stored.etag,
                                     metadata=metadata, cache_control=CACHE_CONTROL)
        except BlobChanged:
            raise
        except Exception as exc:
            raise OnboardingError("dependency_unavailable", f"Blob write of the CRL: {type(exc).__name__}") from exc
        duration_ms = (time.perf_counter() - started) * 1000
        self._audit.certificate_event("crl_published", issuer=authority.subject, actor=actor,
                                      details={"ca": authority.name, "crlNumber": number, "entries": len(entries),
                                               "nextUpdate": iso_utc(crl.next_update_utc), "why": reason})
        telemetry.emit("crl_published", duration_ms, ca=authority.name, crlNumber=number, entries=len(entries),
                       sizeBytes=len(der), nextUpdate=iso_utc(crl.next_update_utc), why=reason)
        log.info("CRL %d of %s published: %d entries, %d bytes, next update %s (%s)", number, authority.name,
                 len(entries), len(der), iso_utc(crl.next_update_utc), reason)
        published = PublishedCrl(authority.name, number, len(entries), crl.last_update_utc, crl.next_update_utc,
                                 frozenset(e.serial_number for e in entries), changed=True, size_bytes=len(der))
        return published, etag

    def _publish_ca_certificate(self, authority) -> None:
        """Keep the certificate of the CA's current key where its certificates' Authority Information Access points.
        Best effort: a missing CA certificate costs relying parties a chain they could have built, never a
        revocation, so a failure is logged and tried again on the next publish."""
        der = authority.certificate.public_bytes(Encoding.DER)
        digest = hashlib.sha256(der).hexdigest()
        name = ca_certificate_blob_name(authority.name, authority.key_id)
        with self._guard:
            if (name, digest) in self._ca_certificates_published:
                return
        try:
            present = self._store.properties(name)
            if present is None or present.metadata.get("sha256") != digest:
                self._store.write(name, der, CA_CERTIFICATE_CONTENT_TYPE, etag=present.etag if present else None,
                                  metadata={"ca": authority.name, "sha256": digest}, cache_control=CACHE_CONTROL)
                log.info("certificate of %s published as %s", authority.name, name)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.error("certificate of %s not published as %s: %s", authority.name, name, type(exc).__name__)
            return
        with self._guard:
            self._ca_certificates_published.add((name, digest))

