"""The regional CAs (certificates in Key Vault, keys non-exportable) and device certificate issuance.

A CA is its Key Vault certificate (REGIONAL_CAS: region=name) plus a KeyVaultSigner over the certificate's key:
every signature comes from Key Vault's `sign`; nothing here can read a private key, and nothing tries.
CA certificates are cached for CERT_CA_CACHE_SECONDS, so a rotated intermediate is picked up without a restart:
from then on certificates and CRLs are signed with the latest version's key, while the webhook keeps trusting every
current version (allocation/trust.py), so devices of the older key keep working. Every device certificate names the
CA's CRL and the certificate of the key that signed it (CRL Distribution Points, Authority Information Access; the
URLs are shared/crl.py's).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from cert_lifecycle.csr import CheckedCsr, check_csr, device_certificate_builder, random_serial_number
from cert_lifecycle.partners import Partner, PartnerDirectory, check_scope, seconds_to_next_day
from cert_lifecycle.records import CertificateRecord, CertificateRecords
from cert_lifecycle.settings import LifecycleSettings
from cert_lifecycle.signer import KeyVaultSigner, SigningError
from shared import telemetry
from shared.audit import AuditWriter
from shared.cache import TtlCache
from shared.config import RegionalCa
from shared.errors import OnboardingError
from shared.serials import serial_hex
from shared.times import iso_utc

log = logging.getLogger(__name__)
SignDigestFactory = Callable[[str], Callable[[str, bytes], bytes]]  # key id -> sign_digest(algorithm, digest)


@dataclass(frozen=True)
class RegionalAuthority:
    name: str
    region: str
    certificate: x509.Certificate
    signer: KeyVaultSigner

    @property
    def subject(self) -> str:
        """RFC 4514 DN: the `issuer` column of certificates and revocations."""
        return self.certificate.subject.rfc4514_string()

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(Encoding.PEM).decode()

    @property
    def key_id(self) -> bytes:
        """The identifier of the key it signs with now (what its certificates and CRLs name as their AKI)."""
        from shared.crl import key_identifier

        return key_identifier(self.certificate)


def _transient(exc: Exception) -> OnboardingError:
    return OnboardingError("dependency_unavailable", f"Key Vault: {type(exc).__name__}")


class CaDirectory:
    def __init__(self, regional_cas: list[RegionalCa], certificate_client, sign_digest_for: SignDigestFactory,
                 ttl_s: float = 900):
        self._regional = regional_cas
        self._certificates = certificate_client
        self._sign_digest_for = sign_digest_for
        self._cache: TtlCache[RegionalAuthority] = TtlCache(ttl_s)
        self._digests: dict[str, Callable[[str, bytes], bytes]] = {}

    @property
    def names(self) -> list[str]:
        return [ca.name for ca in self._regional]

    def _load(self, ca: RegionalCa) -> RegionalAuthority:
        found = self._certificates.get_certificate(ca.name)
        certificate = x509.load_der_x509_certificate(bytes(found.cer))
        key_id = found.key_id
        if key_id not in self._digests:  # one CryptographyClient per key version, reused
            self._digests[key_id] = self._sign_digest_for(key_id)
        return RegionalAuthority(ca.name, ca.region, certificate, KeyVaultSigner(certificate, self._digests[key_id]))

    def get(self, ca: RegionalCa) -> RegionalAuthority:
        try:
            return self._cache.get(ca.name, lambda: self._load(ca))
        except OnboardingError:
            raise
        except Exception as exc:
            raise _transient(exc) from exc

    def by_name(self, name: str) -> RegionalAuthority:
        for ca in self._regional:
            if ca.name == name:
                return self.get(ca)
        raise OnboardingError("unknown_ca", f"issuer {name[:100]}")

    def by_region(self, region: str) -> RegionalAuthority:
        for ca in self._regional:
            if ca.region == region:
                return self.get(ca)
        raise OnboardingError("configuration_error", f"REGIONAL_CAS has no CA for region {region}")

    def all(self) -> list[RegionalAuthority]:
        return [self.get(ca) for ca in self._regional]

    def resolve(self, issuer: str) -> RegionalAuthority:
        """A CA by its name (intermediate-ca-west) or by its subject DN in RFC 4514 form."""
        if issuer in self.names:
            return self.by_name(issuer)
        try:
            wanted = x509.Name.from_rfc4514_string(issuer)
        except ValueError:
            raise OnboardingError("unknown_ca", f"issuer {issuer[:100]}") from None
        for authority in self.all():
            if authority.certificate.subject == wanted:
                return authority
        raise OnboardingError("unknown_ca", f"issuer {issuer[:100]}")


@dataclass(frozen=True)
class IssuedCertificate:
    certificate: x509.Certificate
    authority: RegionalAuthority
    device_id: str
    facility: str
    key: str

    @property
    def serial_number(self) -> str:
        return serial_hex(self.certificate.serial_number)

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(Encoding.PEM).decode()

    def to_body(self) -> dict:
        """The sign_csr answer: the certificate, the CA certificate, and the chain to present (leaf first)."""
        return {
            "deviceId": self.device_id,
            "serialNumber": self.serial_number,
            "issuer": self.authority.name,
            "issuerDn": self.authority.subject,
            "notBefore": iso_utc(self.certificate.not_valid_before_utc),
            "notAfter": iso_utc(self.certificate.not_valid_after_utc),
            "certificate": self.pem,
            "caCertificates": [self.authority.pem],
            "chain": self.pem + self.authority.pem,
        }


class CertificateIssuer:
    """sign_csr's logic, shared with the renewal collector: check, pick the CA, sign via Key Vault, record."""

    def __init__(self, cas: CaDirectory, records: CertificateRecords, audit: AuditWriter,
                 settings: LifecycleSettings, now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                 partners: PartnerDirectory | None = None):
        self._cas = cas
        self._records = records
        self._audit = audit
        self._settings = settings
        self._now = now
        self._partners = partners

    def check(self, csr_text: str | bytes, expected_device_id: str | None = None) -> CheckedCsr:
        return check_csr(csr_text, self._settings.max_csr_bytes, expected_device_id)

    def issue(self, csr_text: str | bytes, *, actor: str, expected_device_id: str | None = None,
              partner: Partner | None = None, lot: str | None = None) -> IssuedCertificate:
        """Check, sign, record. With a partner (sign_csr), also its scope, one active certificate per device
        (certificate_exists: only an operator re-issue replaces it) and a unit of its daily quota; without one (the
        renewal collector) none of these: a renewal is meant to overlap the certificate it replaces."""
        checked = self.check(csr_text, expected_device_id)
        identity = checked.identity
        if partner is not None:
            check_scope(partner, identity)
        facility = self._records.active_facility(identity.facility)
        authority = self._cas.by_region(facility.region)
        now = self._now()
        if partner is not None:
            self._partner_may_issue(partner, identity.device_id, now)
        try:
            return self._issue(checked, authority, now, actor, partner, lot)
        except Exception:
            if partner is not None and self._partners is not None:
                self._partners.return_quota(partner.partner_id, now)
            raise

    def _partner_may_issue(self, partner: Partner, device_id: str, now: dt.datetime) -> None:
        try:
            active = self._records.active_certificates(device_id)
        except Exception as exc:
            raise OnboardingError("dependency_unavailable", f"asset register read failed ({type(exc).__name__})") \
                from exc
        if active:
            raise OnboardingError("certificate_exists", f"{device_id} holds active certificate "
                                  f"{active[0].serial_number}; an operator re-issue supersedes it first")
        if self._partners is None:
            raise OnboardingError("configuration_error", "no partner directory")
        try:
            taken = self._partners.take_quota(partner.partner_id, now)
        except Exception as exc:
            raise OnboardingError("dependency_unavailable", f"quota update failed ({type(exc).__name__})") from exc
        if not taken:
            raise OnboardingError("partner_quota_exceeded",
                                  f"{partner.daily_quota} certificates a day; retry after {seconds_to_next_day(now)} s")

    def _issue(self, checked: CheckedCsr, authority: RegionalAuthority, now: dt.datetime, actor: str,
               partner: Partner | None, lot: str | None = None) -> IssuedCertificate:
        identity = checked.identity
        location = self._settings.crl_location
        builder = device_certificate_builder(
            checked, authority.certificate, random_serial_number(), now,
            dt.timedelta(days=self._settings.validity_days), dt.timedelta(minutes=self._settings.backdate_minutes),
            crl_url=location.crl_url(authority.name) if location else None,
            ca_issuers_url=location.ca_certificate_url(authority.name, authority.key_id) if location else None)
        started = dt.datetime.now(dt.UTC)
        try:
            certificate = authority.signer.sign_certificate(builder)
        except SigningError as exc:
            log.error("Key Vault signature for %s by %s rejected: %s", identity.device_id, authority.name, exc)
            raise OnboardingError("signing_failed", str(exc)) from None
        except Exception as exc:
            raise _transient(exc) from exc
        sign_ms = (dt.datetime.now(dt.UTC) - started).total_seconds() * 1000
        issued = IssuedCertificate(certificate, authority, identity.device_id, identity.facility,
                                   checked.key_description)
        record = CertificateRecord(authority.subject, issued.serial_number, identity.device_id,
                                   certificate.not_valid_before_utc, certificate.not_valid_after_utc, "active")
        try:  # on record before anyone sees it: a certificate that is not on record is never handed out
            # the PEM: a revocation for cause pins it at DPS; the partner: who asked for it; the lot: which batch
            self._records.add_certificate(record, issued.pem, partner_id=partner.partner_id if partner else None,
                                          lot=lot, issued_at=now)
        except Exception as exc:
            raise OnboardingError("dependency_unavailable", f"asset register write failed ({type(exc).__name__})") \
                from exc
        self._audit.certificate_event("issued", device_id=identity.device_id, issuer=authority.subject,
                                      serial_number=issued.serial_number, actor=actor,
                                      details={"ca": authority.name, "key": checked.key_description,
                                               "notAfter": iso_utc(record.not_after),
                                               **({"partnerId": partner.partner_id} if partner else {}),
                                               **({"lot": lot} if lot else {})})
        telemetry.emit("certificate_issued", sign_ms, deviceId=identity.device_id, facility=identity.facility,
                       ca=authority.name, serialNumber=issued.serial_number, key=checked.key_description,
                       actor=actor.split(":", 1)[0])
        return issued
