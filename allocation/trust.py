"""Revocation checking against the regional CAs' CRLs kept in Key Vault. Fails closed (docs/architecture.md).

For each configured regional CA: its certificate (Key Vault certificate) and its CRL (Key Vault secret,
base64 DER), verified and indexed by shared.crl, cached for CRL_CACHE_TTL_SECONDS. A device certificate whose
issuer is no configured CA is refused (unknown_issuer); one whose CA has no valid CRL is refused
(crl_unavailable); a revoked serial is refused (certificate_revoked).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from allocation.certificate import CertificateDetails, distinguished_name
from allocation.settings import allocation_settings
from shared.cache import TtlCache
from shared.config import RegionalCa, Settings
from shared.crl import CrlInvalid, RevocationIndex, crl_secret_name, verify_and_index
from shared.errors import OnboardingError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IssuingCa:
    name: str
    region: str
    certificate: x509.Certificate

    @property
    def subject(self) -> str:
        return distinguished_name(self.certificate.subject)


class TrustStore:
    def __init__(self, settings: Settings, certificate_client, secret_client,
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)):
        cfg = allocation_settings(settings)
        self._settings = settings
        self._ttl_s, self._grace = cfg.crl_cache_ttl_s, dt.timedelta(seconds=cfg.crl_grace_s)
        self._certificates = certificate_client
        self._secrets = secret_client
        self._now = now
        self._cas: TtlCache[dict[str, IssuingCa]] = TtlCache(self._ttl_s)
        self._crls: TtlCache[RevocationIndex] = TtlCache(self._ttl_s)

    # -- loading ----------------------------------------------------------------------------------
    def _load_ca(self, ca: RegionalCa) -> IssuingCa:
        cer = self._certificates.get_certificate(ca.name).cer
        return IssuingCa(ca.name, ca.region, x509.load_der_x509_certificate(bytes(cer)))

    def issuing_cas(self) -> dict[str, IssuingCa]:
        """Configured CAs by subject DN."""
        def load() -> dict[str, IssuingCa]:
            cas = [self._load_ca(ca) for ca in self._settings.regional_cas]
            return {ca.subject: ca for ca in cas}

        try:
            return self._cas.get("all", load)
        except Exception as exc:  # any failure to know the CAs means no trust decision
            raise OnboardingError("crl_unavailable", f"regional CA certificates unavailable: {type(exc).__name__}") \
                from exc

    def _load_crl(self, ca: IssuingCa) -> RevocationIndex:
        secret = self._secrets.get_secret(crl_secret_name(self._settings.crl_secret_prefix, ca.name))
        try:
            der = base64.b64decode(secret.value or "", validate=True)
        except (binascii.Error, ValueError):
            raise CrlInvalid("CRL secret is not base64") from None
        index = verify_and_index(der, ca.certificate, self._now(), self._grace)
        log.info("CRL of %s loaded: number %s, %d revoked, next update %s",
                 ca.name, index.crl_number, len(index), index.next_update.isoformat())
        return index

    def revocations(self, ca: IssuingCa) -> RevocationIndex:
        try:
            index = self._crls.get(ca.name, lambda: self._load_crl(ca))
        except CrlInvalid as exc:
            raise OnboardingError("crl_unavailable", f"{ca.name}: {exc}") from exc
        except Exception as exc:  # missing secret, Key Vault down: fail closed
            raise OnboardingError("crl_unavailable", f"{ca.name}: CRL not readable ({type(exc).__name__})") \
                from exc
        if self._now() > index.next_update + self._grace:
            self._crls.invalidate(ca.name)  # expired while cached: the next request reloads
            raise OnboardingError("crl_unavailable", f"{ca.name}: CRL past nextUpdate")
        return index

    # -- decisions --------------------------------------------------------------------------------
    def issuer_of(self, certificate: CertificateDetails) -> IssuingCa:
        ca = self.issuing_cas().get(certificate.issuer)
        if ca is None:
            raise OnboardingError("unknown_issuer", f"issuer {certificate.issuer}")
        if certificate.certificate is not None:
            # DPS has checked the chain already; checking the signature again costs ~0.1 ms and means a
            # certificate that merely names our CA can never pass on the strength of its issuer field.
            try:
                certificate.certificate.verify_directly_issued_by(ca.certificate)
            except (InvalidSignature, ValueError, TypeError):
                raise OnboardingError("unknown_issuer", "certificate not signed by the named CA") from None
        return ca

    def check(self, certificate: CertificateDetails) -> IssuingCa:
        """The issuing CA when the certificate is trusted; else raise the refusal."""
        ca = self.issuer_of(certificate)
        if self.revocations(ca).is_revoked(certificate.serial_number):
            raise OnboardingError("certificate_revoked", f"serial {certificate.serial_hex} revoked by {ca.name}")
        return ca
