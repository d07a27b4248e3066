"""Certificate lifecycle's own app settings, read through the shared Settings accessors (validated at first use).

| setting | default | meaning |
|---|---|---|
| CERT_VALIDITY_DAYS | 730 | lifetime of a device certificate (never beyond the issuing CA's notAfter) |
| CERT_BACKDATE_MINUTES | 5 | notBefore is this far in the past, for devices whose clocks run behind |
| CERT_MAX_CSR_BYTES | 16384 | a sign request body larger than this is refused (request_too_large) |
| CERT_CA_CACHE_SECONDS | 900 | how long a regional CA certificate read from Key Vault is reused |
| CERT_RENEW_DAYS | 90 | `renew` at most this many days before notAfter ... |
| CERT_RENEW_FRACTION | 0.3333 | ... and once less than this share of the lifetime remains (both: see expiry.py) |
| CERT_CRITICAL_DAYS | 30 | `critical` at most this many days before notAfter ... |
| CERT_CRITICAL_FRACTION | 0.10 | ... and once less than this share of the lifetime remains |
| CERT_OFFLINE_HOURS | 24 | an `expired` sensor with no activity on its hub for this long is stranded (visit needed) |
| CERT_SCAN_PAGE_SIZE | 1000 | twins per query page (IoT Hub's maximum is 1000) |
| CERT_SCAN_UNREPORTED_PAGES | 5 | pages of devices without a reported certificate listed per hub (then "at least") |
| CERT_ESCALATION_EMAIL | (none) | also receives `critical` and `expired` digests |
| CERT_ALERT_SENDER | (none) | ACS sender address (DoNotReply@...); e-mail only when this and an endpoint are set |
| ACS_ENDPOINT | (none) | Azure Communication Services endpoint (managed identity) ... |
| ACS_CONNECTION_STRING | (none) | ... or its connection string (development) |
| CERT_SUPERSEDED_GRACE_HOURS | 24 | the old certificate is revoked this long after DPS provisions the renewed one |
| CRL_VALIDITY_HOURS | 168 | nextUpdate - thisUpdate of every CRL issued |
| CRL_REFRESH_BEFORE_HOURS | 96 | the refresh timer re-issues a CRL when less than this remains before nextUpdate |
| CRL_CONTAINER | crl | (shared) the Blob container of the CRLs (`{ca}.crl`) and CA certificates (shared/crl.py) |
| CRL_DISTRIBUTION_URL | container URL | (shared) public base URL of that container, written into every certificate |
| SECURITY_ALERTS_QUEUE | security-alerts | (shared) revocations and superseded certificates are announced here |
| CERT_SIGN_DEADLINE_SECONDS | 10 | POST /api/certificates/sign answers within this (else 503, Retry-After) |
| CERT_REVOKE_DEADLINE_SECONDS | 30 | POST /api/certificates/revoke answers within this (else 503, Retry-After) |
| PARTNER_TOKEN_ISSUER | (none) | `iss` of partner tokens: https://login.microsoftonline.com/{tenant}/v2.0 |
| PARTNER_TOKEN_AUDIENCE | (none) | `aud` of partner tokens: the client ID of the onboarding API's app registration |
| PARTNER_TOKEN_JWKS_URL | (none) | the issuer's keys: https://login.microsoftonline.com/{tenant}/discovery/v2.0/keys |

Without the three PARTNER_TOKEN_* settings sign_csr refuses every request (configuration_error): it fails closed;
docs/partners.md has the values.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.config import SettingError, Settings

# Queue names are fixed (the queue trigger's name is static, and infra creates these).
RENEWAL_QUEUE = "certificate-renewals"
ALERTS_QUEUE = "certificate-alerts"


@dataclass(frozen=True)
class Thresholds:
    renew_days: float = 90
    renew_fraction: float = 1 / 3
    critical_days: float = 30
    critical_fraction: float = 0.10
    # An expired sensor without activity for this long is stranded: DPS refuses its certificate at TLS, so it cannot
    # renew by itself and needs a visit (README "Sensors offline past expiry").
    offline_hours: float = 24


@dataclass(frozen=True)
class LifecycleSettings:
    validity_days: float = 730
    backdate_minutes: float = 5
    max_csr_bytes: int = 16 * 1024
    ca_cache_s: float = 900
    thresholds: Thresholds = Thresholds()
    scan_page_size: int = 1000
    scan_unreported_pages: int = 5
    renewal_queue: str = RENEWAL_QUEUE
    alerts_queue: str = ALERTS_QUEUE
    security_alerts_queue: str = "security-alerts"
    escalation_email: str | None = None
    alert_sender: str | None = None
    acs_endpoint: str | None = None
    acs_connection_string: str | None = None
    superseded_grace_hours: float = 24
    crl_validity_hours: float = 168
    crl_refresh_before_hours: float = 96
    crl_container: str = "crl"
    crl_distribution_url: str | None = None  # None (tests only): certificates name no CRL distribution point
    partner_tokens: object | None = None  # cert_lifecycle.partners.TokenSettings, or None: partners refused
    sign_deadline_s: float = 10.0
    revoke_deadline_s: float = 30.0


    @property
    def email_configured(self) -> bool:
        return bool(self.alert_sender and (self.acs_endpoint or self.acs_connection_string))

    @property
    def crl_location(self):
        """Where the CRLs are stored and served (shared.crl.CrlLocation), or None without a distribution URL."""
        from shared.crl import CrlLocation  # cryptography: not imported while the host indexes the functions

        return CrlLocation(self.crl_container, self.crl_distribution_url) if self.crl_distribution_url else None


def _fraction(settings: Settings, name: str, default: float) -> float:
    value = settings.number(name, default)
    if not 0 <= value <= 1:
        raise SettingError(f"app setting {name} must be a fraction between 0 and 1, got {value}")
    return value


def lifecycle_settings(settings: Settings) -> LifecycleSettings:
    thresholds = Thresholds(
        renew_days=settings.number("CERT_RENEW_DAYS", 90),
        renew_fraction=_fraction(settings, "CERT_RENEW_FRACTION", 1 / 3),
        critical_days=settings.number("CERT_CRITICAL_DAYS", 30),
        critical_fraction=_fraction(settings, "CERT_CRITICAL_FRACTION", 0.10),
        offline_hours=settings.number("CERT_OFFLINE_HOURS", 24, minimum=0),
    )
    if thresholds.critical_days > thresholds.renew_days:
        raise SettingError("app setting CERT_CRITICAL_DAYS must not exceed CERT_RENEW_DAYS")
    if thresholds.critical_fraction > thresholds.renew_fraction:
        raise SettingError("app setting CERT_CRITICAL_FRACTION must not exceed CERT_RENEW_FRACTION")
    page_size = int(settings.number("CERT_SCAN_PAGE_SIZE", 1000, minimum=1))
    if page_size > 1000:
        raise SettingError(f"app setting CERT_SCAN_PAGE_SIZE must be at most 1000 (IoT Hub's maximum), got {page_size}")
    validity = settings.number("CERT_VALIDITY_DAYS", 730, minimum=1)
    refresh_before = settings.number("CRL_REFRESH_BEFORE_HOURS", 96)
    crl_validity = settings.number("CRL_VALIDITY_HOURS", 168, minimum=1)
    if refresh_before >= crl_validity:
        raise SettingError("app setting CRL_REFRESH_BEFORE_HOURS must be less than CRL_VALIDITY_HOURS")
    return LifecycleSettings(
        validity_days=validity,
        backdate_minutes=settings.number("CERT_BACKDATE_MINUTES", 5),
        max_csr_bytes=int(settings.number("CERT_MAX_CSR_BYTES", 16 * 1024, minimum=1024)),
        ca_cache_s=settings.number("CERT_CA_CACHE_SECONDS", 900),
        thresholds=thresholds,
        scan_page_size=page_size,
        scan_unreported_pages=int(settings.number("CERT_SCAN_UNREPORTED_PAGES", 5, minimum=1)),
        security_alerts_queue=settings.security_alerts_queue,
        escalation_email=settings.get("CERT_ESCALATION_EMAIL"),
        alert_sender=settings.get("CERT_ALERT_SENDER"),
        acs_endpoint=settings.get("ACS_ENDPOINT"),
        acs_connection_string=settings.get("ACS_CONNECTION_STRING"),
        superseded_grace_hours=settings.number("CERT_SUPERSEDED_GRACE_HOURS", 24),
        crl_validity_hours=crl_validity,
        crl_refresh_before_hours=refresh_before,
        crl_container=settings.crl_container,
        crl_distribution_url=settings.crl_distribution_url,
        partner_tokens=partner_token_settings(settings),
        sign_deadline_s=settings.number("CERT_SIGN_DEADLINE_SECONDS", 10, minimum=1),
        revoke_deadline_s=settings.number("CERT_REVOKE_DEADLINE_SECONDS", 30, minimum=1),
    )


def partner_token_settings(settings: Settings):
    """The partner token settings, or None unless all three are set: then sign_csr refuses every request
    (configuration_error, naming them) while every other lifecycle function keeps working."""
    from cert_lifecycle.partners import TokenSettings

    issuer, audience, jwks_url = (settings.get("PARTNER_TOKEN_ISSUER"), settings.get("PARTNER_TOKEN_AUDIENCE"),
                                  settings.get("PARTNER_TOKEN_JWKS_URL"))
    if not (issuer and audience and jwks_url):
        return None
    return TokenSettings(issuer, audience, jwks_url)
