"""CRL contents and publication. The builder is pure; CrlPublisher does the I/O (SQL -> Key Vault).

The revocations table is the source of truth. Every CRL lists the CA's revocations (with reason codes and
revocation dates), carries CRLNumber and the authority key identifier, is signed through Key Vault and
verified, and is stored as the secret `{CRL_SECRET_PREFIX}{ca}` (base64 DER, application/pkix-crl), which is
what the allocation webhook reads. Entries whose certificate (on record) expired more than one CRL lifetime
ago are dropped (RFC 5280 5.3: listed on at least one CRL past expiry), so the CRL does not grow forever.

Publication is idempotent and safe under concurrency without a lock: after storing, the publisher reads the
secret back and checks that the CRL now in Key Vault lists every revocation in SQL; if a concurrent writer
overwrote it with an older view, it publishes again (bounded). A CRL larger than the secret limit is refused
loudly (crl_too_large), never truncated.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
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
from shared.crl import CrlInvalid, crl_secret_name, verify_and_index
from shared.errors import OnboardingError
from shared.serials import serial_int
from shared.times import iso_utc

log = logging.getLogger(__name__)
CRL_CONTENT_TYPE = "application/pkix-crl"
BACKDATE = dt.timedelta(minutes=1)
PUBLISH_ATTEMPTS = 3

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


def crl_entries(records: Iterable[RevocationRecord], now: dt.datetime,
                keep_after_expiry: dt.timedelta) -> list[CrlEntry]:
    entries = []
    for record in records:
        if record.not_after is not None and record.not_after + keep_after_expiry < now:
            continue  # expired long enough ago: may leave the CRL
        entries.append(CrlEntry(serial_int(record.serial_number), record.revoked_at, record.reason))
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
class PublishedCrl:
    ca: str
    number: int | None
    entries: int
    this_update: dt.datetime | None
    next_update: dt.datetime | None
    serials: frozenset[int]
    changed: bool
    size_bytes: int = 0


def _crl_number(der: bytes) -> int | None:
    try:
        crl = x509.load_der_x509_crl(der)
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except (ValueError, x509.ExtensionNotFound):
        return None


class CrlPublisher:
    def __init__(self, secret_client, records: CertificateRecords, audit: AuditWriter,
                 settings: LifecycleSettings, now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)):
        self._secrets = secret_client
        self._records = records
        self._audit = audit
        self._settings = settings
        self._now = now

    def secret_name(self, ca_name: str) -> str:
        return crl_secret_name(self._settings.crl_secret_prefix, ca_name)

    def current(self, authority) -> tuple[PublishedCrl | None, int | None]:
        """(the valid CRL now in Key Vault or None, the highest CRL number seen even on an invalid one)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            secret = self._secrets.get_secret(self.secret_name(authority.name))
        except ResourceNotFoundError:
            return None, None
        tag_number = None
        tags = getattr(getattr(secret, "properties", None), "tags", None) or {}
        if str(tags.get("crlNumber", "")).isdigit():
            tag_number = int(tags["crlNumber"])
        try:
            der = base64.b64decode(secret.value or "", validate=True)
        except (binascii.Error, ValueError):
            return None, tag_number
        number = max(filter(None, [_crl_number(der), tag_number]), default=None)
        try:
            index = verify_and_index(der, authority.certificate, self._now())
        except CrlInvalid as exc:
            log.warning("CRL of %s in Key Vault is not valid: %s", authority.name, exc)
            return None, number
        return PublishedCrl(authority.name, index.crl_number, len(index), index.this_update, index.next_update,
                            index.revoked, changed=False, size_bytes=len(der)), number

    def _wanted(self, authority, now: dt.datetime) -> list[CrlEntry]:
        keep = dt.timedelta(hours=self._settings.crl_validity_hours)
        return crl_entries(self._records.revocations(authority.subject), now, keep)

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

    def publish(self, authority, *, force_reason: str | None = None, actor: str = "system") -> PublishedCrl:
        """Bring the CA's CRL in Key Vault up to date with SQL; no-op when it already is (and not forced)."""
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            now = self._now()
            current, last_number = self.current(authority)
            wanted = self._wanted(authority, now)
            reason = force_reason if attempt == 1 and force_reason else self.needs_refresh(current, wanted, now)
            if reason is None:
                return current  # type: ignore[return-value]
            published = self._issue(authority, wanted, last_number, now, reason, actor)
            after, _ = self.current(authority)  # read back: a concurrent writer may have stored an older view
            if after is not None and {e.serial_number for e in self._wanted(authority, now)} <= after.serials:
                return published
            log.warning("CRL of %s in Key Vault lacks revocations after publishing (attempt %d); publishing again",
                        authority.name, attempt)
            force_reason = None
        raise OnboardingError("dependency_unavailable", f"CRL of {authority.name} could not be published consistently")

    def _issue(self, authority, entries: list[CrlEntry], last_number: int | None, now: dt.datetime, reason: str,
               actor: str) -> PublishedCrl:
        # CRL numbers only grow; when the last one is unknown, continue from the clock so they never go back.
        number = (last_number + 1) if last_number is not None else max(2, int(now.timestamp()))
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
        value = base64.b64encode(der).decode()
        if len(value) > self._settings.crl_max_secret_chars:
            telemetry.emit("crl_too_large", ca=authority.name, entries=len(entries), sizeBytes=len(der),
                           reasonCode="crl_too_large")
            raise OnboardingError("crl_too_large", f"{authority.name}: {len(entries)} entries, {len(value)} base64 "
                                  f"characters (limit {self._settings.crl_max_secret_chars})")
        try:
            self._secrets.set_secret(self.secret_name(authority.name), value, content_type=CRL_CONTENT_TYPE,
                                     tags={"ca": authority.name, "crlNumber": str(number), "entries": str(len(entries)),
                                           "nextUpdate": iso_utc(crl.next_update_utc)})
        except Exception as exc:
            raise OnboardingError("dependency_unavailable", f"Key Vault set_secret: {type(exc).__name__}") from exc
        duration_ms = (time.perf_counter() - started) * 1000
        self._audit.certificate_event("crl_published", issuer=authority.subject, actor=actor,
                                      details={"ca": authority.name, "crlNumber": number, "entries": len(entries),
                                               "nextUpdate": iso_utc(crl.next_update_utc), "why": reason})
        telemetry.emit("crl_published", duration_ms, ca=authority.name, crlNumber=number, entries=len(entries),
                       sizeBytes=len(der), nextUpdate=iso_utc(crl.next_update_utc), why=reason)
        log.info("CRL %d of %s published: %d entries, %d bytes, next update %s (%s)", number, authority.name,
                 len(entries), len(der), iso_utc(crl.next_update_utc), reason)
        return PublishedCrl(authority.name, number, len(entries), crl.last_update_utc, crl.next_update_utc,
                            frozenset(e.serial_number for e in entries), changed=True, size_bytes=len(der))
