"""Revocation checking against each regional CA's CRL in Blob Storage. Fails closed (docs/architecture.md 5).

Each configured regional CA is loaded on its own, so one CA missing from Key Vault, or one CRL that cannot be
read, refuses the devices of that CA only while the other regions keep allocating:

- the CA is every current version of its Key Vault certificate (enabled, inside its validity): a CA renewed with
  a new key has two, and the certificates of both keep working. A device certificate is matched to the version
  whose subjectKeyIdentifier its authorityKeyIdentifier names, and its signature is checked against it;
- its CRL is the blob `{ca}.crl` of CRL_CONTAINER (shared/crl.py), re-checked every CRL_CACHE_TTL_SECONDS with
  If-None-Match on the ETag held (304 keeps the verified index without a download), verified against any current
  version of the CA by shared.crl (issuer, signature, nextUpdate, CRL number), and refused when its CRL number is
  lower than the one held: an older CRL put back must not un-revoke anything (RFC 5280 5.2.3). The held CRL is
  used while it is in date; past its nextUpdate the CA's devices are refused.

Refusals: a certificate of no configured CA, or not signed by a current key of it, is unknown_issuer (403); a CA
that cannot be loaded or has no valid CRL is crl_unavailable (503: DPS retries, docs/contracts.md 1.3); a revoked
serial is certificate_revoked (403). A request never waits behind another one re-reading a CRL it already holds
in date (docs/architecture.md 5): only the first read of a CA's CRL is waited for.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from allocation.certificate import CertificateDetails, distinguished_name
from allocation.settings import allocation_settings
from shared.config import RegionalCa, Settings
from shared.crl import CrlInvalid, RevocationIndex, authority_key_id, crl_blob_name, signer_candidates, verify_and_index
from shared.errors import OnboardingError
from shared.storage import BlobStore

log = logging.getLogger(__name__)
FAILURE_MEMORY_S = 5.0  # a failed load is answered from memory this long, so a broken dependency is not hammered


@dataclass(frozen=True)
class IssuingCa:
    name: str
    region: str
    versions: tuple[x509.Certificate, ...]  # every current version of the CA certificate, newest first

    @property
    def certificate(self) -> x509.Certificate:
        return self.versions[0]

    @property
    def subject(self) -> str:
        return distinguished_name(self.certificate.subject)

    @property
    def subjects(self) -> frozenset[str]:
        return frozenset(distinguished_name(v.subject) for v in self.versions)


class CaNotLoadable(Exception):
    """The CA has no current certificate version in Key Vault; the message is safe to return."""


class _Held:
    """What one CA is trusted with (its certificate versions, or its CRL), when it was last asked for, and the
    last failure to get it. `etag` is the CRL's, for the conditional read."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.value = None
        self.etag: str | None = None
        self.checked = -math.inf
        self.failure: BaseException | None = None
        self.failed_until = -math.inf


def _why(exc: BaseException) -> str:
    from azure.core.exceptions import ResourceNotFoundError

    if isinstance(exc, CaNotLoadable):
        return str(exc)
    if isinstance(exc, ResourceNotFoundError):
        return "not in Key Vault"
    return type(exc).__name__


def _unreachable(exc: BaseException) -> bool:
    """The dependency did not answer (timeout, connection, 5xx, throttled), as opposed to answering that the CA
    is gone or the CRL is missing or invalid: only then is the last good value kept."""
    from azure.core.exceptions import ResourceNotFoundError

    if isinstance(exc, CaNotLoadable | ResourceNotFoundError):
        return False
    if isinstance(exc, OnboardingError):  # _read_crl's refusals: unreachable only when the store raised
        cause = exc.__cause__
        return cause is not None and not isinstance(cause, CrlInvalid) and _unreachable(cause)
    return True


class TrustStore:
    def __init__(self, settings: Settings, certificate_client, crl_store: BlobStore,
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                 clock: Callable[[], float] = time.monotonic):
        cfg = allocation_settings(settings)
        self._settings = settings
        self._ttl_s, self._grace = cfg.crl_cache_ttl_s, dt.timedelta(seconds=cfg.crl_grace_s)
        self._wait_s = cfg.deadline_s  # a request waits for a first load of a CA or CRL at most this long
        self._certificates = certificate_client
        self._store = crl_store
        self._now = now
        self._clock = clock
        self._versions: dict[tuple[str, str], x509.Certificate] = {}  # a version's certificate never changes
        self._subjects: dict[str, frozenset[str]] = {}  # each CA's subjects when last loaded: who a device belongs to
        self._held: dict[tuple[str, str], _Held] = {}  # ("ca" | "crl", CA name) -> what is held
        self._guard = threading.Lock()

    def invalidate(self) -> None:
        """Ask Key Vault and the store again on the next request (the CRLs held stay, with their numbers: they still
        guard against an older CRL)."""
        with self._guard:
            for held in self._held.values():
                held.checked, held.failure, held.failed_until = -math.inf, None, -math.inf

    def _held_for(self, kind: str, name: str) -> _Held:
        with self._guard:
            return self._held.setdefault((kind, name), _Held())

    def _current(self, held: _Held, load: Callable[[], object], usable: Callable[[object], bool] = lambda v: True):
        """held.value while it is younger than the TTL; else load() it again. One request loads while the others
        answer with the value held (never waiting behind a slow dependency, docs/architecture.md 5); only a first
        load is waited for, and at most wait_s (ALLOCATION_DEADLINE_SECONDS). When the dependency fails (does not
        answer, times out: not when it answers that the CA or CRL is gone or invalid) the value held stays in use
        while usable(value) says it is still in date (a CA version until its expiry; a CRL until its nextUpdate,
        which revocations() checks), and the load is tried again after a few seconds. Else a failed load is raised
        to every caller for a few seconds, then tried again."""
        while True:
            value = held.value
            if value is not None and self._clock() - held.checked < self._ttl_s:
                return value
            if held.failure is not None and self._clock() < held.failed_until:
                raise held.failure
            if held.lock.acquire(blocking=False):
                try:
                    try:
                        value = load()
                    except Exception as exc:
                        if held.value is not None and _unreachable(exc) and usable(held.value):
                            log.warning("trust: refresh failed (%s); the value held is kept", _why(exc))
                            # ask again in a few seconds, meanwhile answer with the value held
                            held.checked = self._clock() - self._ttl_s + min(FAILURE_MEMORY_S, self._ttl_s)
                            return held.value
                        held.failure, held.failed_until = exc, self._clock() + min(FAILURE_MEMORY_S, self._ttl_s)
                        raise
                    held.value, held.checked, held.failure = value, self._clock(), None
                    return value
                finally:
                    held.lock.release()
            if value is not None:  # another request is loading it again: answer with the one held meanwhile
                return value
            # the first load is under way: wait for it (never past the deadline), then look again
            if not held.lock.acquire(timeout=self._wait_s):
                raise OnboardingError("crl_unavailable", f"still loading after {self._wait_s:.1f}s")
            held.lock.release()

    # -- the regional CAs, each on its own --------------------------------------------------------------------
    def _load_ca(self, ca: RegionalCa) -> IssuingCa:
        now = self._now()
        current = [p for p in self._certificates.list_properties_of_certificate_versions(ca.name)
                   if p.enabled is not False and (p.expires_on is None or p.expires_on > now)
                   and (p.not_before is None or p.not_before <= now)]
        current.sort(key=lambda p: p.created_on or dt.datetime.min.replace(tzinfo=dt.UTC), reverse=True)
        versions = []
        for properties in current:
            key = (ca.name, properties.version)
            if key not in self._versions:
                found = self._certificates.get_certificate_version(ca.name, properties.version)
                self._versions[key] = x509.load_der_x509_certificate(bytes(found.cer))
            certificate = self._versions[key]
            if certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc:
                versions.append(certificate)
        if not versions:
            raise CaNotLoadable("no enabled, unexpired version in Key Vault")
        issuing = IssuingCa(ca.name, ca.region, tuple(versions))
        self._subjects[ca.name] = issuing.subjects
        log.info("regional CA %s loaded: %d current version(s)", ca.name, len(versions))
        return issuing

    def _load(self, cas: list[RegionalCa]) -> tuple[list[IssuingCa], dict[str, BaseException]]:
        loaded, failed = [], {}
        for ca in cas:
            try:
                loaded.append(self._current(self._held_for("ca", ca.name), lambda ca=ca: self._load_ca(ca),
                                            self._ca_in_date))
            except Exception as exc:  # noqa: BLE001 - one CA's failure refuses its own devices only
                failed[ca.name] = exc
        return loaded, failed

    def _ca_in_date(self, ca: IssuingCa) -> bool:
        now = self._now()
        return any(v.not_valid_before_utc <= now < v.not_valid_after_utc for v in ca.versions)

    def issuer_of(self, certificate: CertificateDetails) -> IssuingCa:
        """The configured CA that issued the certificate, checked by signature when the certificate is given."""
        regional = self._settings.regional_cas
        # A device of a CA seen before needs that CA only: a broken CA elsewhere costs it nothing.
        known = [ca for ca in regional if certificate.issuer in self._subjects.get(ca.name, ())]
        groups = [known, [ca for ca in regional if ca not in known]] if known else [regional]
        failed: dict[str, BaseException] = {}
        named: list[IssuingCa] = []
        for group in groups:
            loaded, group_failed = self._load(group)
            failed.update(group_failed)
            named = [ca for ca in loaded if certificate.issuer in ca.subjects]
            if named:
                break
        if not named:
            if failed:  # it may belong to a CA that cannot be loaded now: may succeed later, so DPS retries
                reasons = "; ".join(f"{name}: {_why(exc)}" for name, exc in sorted(failed.items()))
                raise OnboardingError("crl_unavailable", f"issuer {certificate.issuer} is no loaded regional CA; "
                                      f"not loadable: {reasons}")
            raise OnboardingError("unknown_issuer", f"issuer {certificate.issuer}")
        if certificate.certificate is None:
            return named[0]
        # DPS has checked the chain already; checking the signature again costs ~0.1 ms and means a certificate
        # that merely names our CA can never pass on the strength of its issuer field.
        for ca in named:
            if self._signed_by(certificate.certificate, ca):
                return ca
        try:
            named_key = authority_key_id(certificate.certificate)
        except ValueError:
            named_key = None
        key = f" (its authority key id {named_key.hex()})" if named_key else ""
        raise OnboardingError("unknown_issuer", f"certificate not signed by a current key of "
                              f"{', '.join(ca.name for ca in named)}{key}")

    @staticmethod
    def _signed_by(certificate: x509.Certificate, ca: IssuingCa) -> bool:
        try:
            named_key = authority_key_id(certificate)
        except ValueError:
            named_key = None
        for version in signer_candidates(ca.versions, named_key):
            try:
                certificate.verify_directly_issued_by(version)
                return True
            except (InvalidSignature, ValueError, TypeError):
                continue
        return False

    # -- CRLs -------------------------------------------------------------------------------------------------
    def revocations(self, ca: IssuingCa) -> RevocationIndex:
        """The CA's verified CRL index; raises crl_unavailable when there is none in date."""
        held = self._held_for("crl", ca.name)
        index: RevocationIndex = self._current(held, lambda: self._read_crl(ca, held))
        if self._now() > index.next_update + self._grace:
            held.checked = -math.inf  # the next request asks the store again
            raise OnboardingError("crl_unavailable", f"{ca.name}: CRL {index.crl_number} past nextUpdate "
                                  f"{index.next_update.isoformat()}")
        return index

    def _unavailable(self, ca: IssuingCa, detail: str) -> OnboardingError:
        log.warning("CRL of %s unavailable: %s", ca.name, detail)
        return OnboardingError("crl_unavailable", f"{ca.name}: {detail}")

    def _read_crl(self, ca: IssuingCa, held: _Held) -> RevocationIndex:
        """The CRL to trust now: ask the store (conditionally when one is held), verify what changed, and keep the
        held CRL when the store offers an older one."""
        previous: RevocationIndex | None = held.value
        blob = crl_blob_name(ca.name)
        started = time.perf_counter()
        try:
            read = self._store.read(blob, etag=held.etag if previous is not None else None)
        except Exception as exc:  # Storage down or refusing: fail closed, DPS retries
            raise self._unavailable(ca, f"CRL not readable ({type(exc).__name__})") from exc
        if read is None:
            raise self._unavailable(ca, f"no CRL blob {blob} (the refresh timer or `onboarding certs refresh-crls` "
                                        f"publishes it)")
        if read.not_modified and previous is not None:
            return previous
        try:
            index = verify_and_index(read.data or b"", ca.versions, self._now(), self._grace)
        except CrlInvalid as exc:
            raise self._unavailable(ca, str(exc)) from exc
        if previous is not None and index.crl_number < previous.crl_number:
            # An older CRL put back (a restored backup, a stale writer): it may lack revocations the held one has.
            log.warning("CRL of %s refused: number %d is lower than the %d held; the held one is used until its "
                        "nextUpdate %s", ca.name, index.crl_number, previous.crl_number,
                        previous.next_update.isoformat())
            return previous
        held.etag = read.etag
        log.info("CRL of %s loaded in %.0f ms: number %d, %d revoked, %d bytes, next update %s", ca.name,
                 (time.perf_counter() - started) * 1000, index.crl_number, len(index), len(read.data or b""),
                 index.next_update.isoformat())
        return index

    # -- decisions --------------------------------------------------------------------------------------------
    def check(self, certificate: CertificateDetails) -> IssuingCa:
        """The issuing CA when the certificate is trusted; else raise the refusal."""
        ca = self.issuer_of(certificate)
        if self.revocations(ca).is_revoked(certificate.serial_number):
            raise OnboardingError("certificate_revoked", f"serial {certificate.serial_hex} revoked by {ca.name}")
        return ca
