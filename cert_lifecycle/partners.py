"""Manufacturing partners: who may ask for device certificates, for which devices, and how many a day.

Each partner is its own identity (docs/partners.md). In Azure it is an Entra application holding the app role
PARTNER_ROLE on the onboarding API's app registration; it calls POST /api/certificates/sign with the function key
AND `Authorization: Bearer <its Entra access token>`. The app validates the token itself (PartnerAuthenticator):
signature against the tenant's published keys (PARTNER_TOKEN_JWKS_URL), issuer (PARTNER_TOKEN_ISSUER), audience
(PARTNER_TOKEN_AUDIENCE), expiry, and the app role in the `roles` claim; the partner is the calling application
(`azp`, or `appid` in a v1 token). Locally the stack's identity endpoint issues tokens of the same shape signed with
a stack key and publishes its key set (local/identity.py), and the same code validates them.

The partner's record (`partners` table, migration 0003; PartnerDirectory) holds its scope and quota:
- facilities and sensor types it may serve (comma lists, `*` = all), a serial prefix (NULL = any serial);
- daily_quota certificates per UTC day, counted in quota_day/quota_used by one conditional UPDATE
  (take_quota), the same on every instance, as allocation/capacity.py takes hub places;
- active: a disabled partner is refused even with a valid token.
The checks (check_scope, seconds_to_next_day) are pure; cert_lifecycle/authority.py applies them at issuance.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from shared.errors import OnboardingError
from shared.identity import DeviceIdentity
from shared.sql import Database
from shared.times import sql_utc

log = logging.getLogger(__name__)

PARTNER_ROLE = "Certificates.Request"  # the app role partners hold on the onboarding API (docs/partners.md)
ALL = "*"
REISSUE_REASONS = ("lost_secure_element", "rework", "expired_offline")
_COLUMNS = "partner_id, name, facilities, sensor_types, serial_prefix, daily_quota, quota_day, quota_used, active"


@dataclass(frozen=True)
class Partner:
    partner_id: str
    name: str
    facilities: tuple[str, ...]  # ("*",) = every facility
    sensor_types: tuple[str, ...]  # ("*",) = every sensor type
    serial_prefix: str | None
    daily_quota: int
    active: bool = True
    quota_day: str | None = None
    quota_used: int = 0

    def to_dict(self) -> dict:
        return {"partnerId": self.partner_id, "name": self.name, "facilities": list(self.facilities),
                "sensorTypes": list(self.sensor_types), "serialPrefix": self.serial_prefix,
                "dailyQuota": self.daily_quota, "active": self.active,
                "usedToday": self.quota_used if self.quota_day == quota_day() else 0}


def _split(text: str | None) -> tuple[str, ...]:
    values = tuple(v.strip() for v in (text or ALL).split(",") if v.strip())
    return values or (ALL,)


def _partner(row: dict) -> Partner:
    return Partner(row["partner_id"], row["name"], _split(row["facilities"]), _split(row["sensor_types"]),
                   row["serial_prefix"] or None, int(row["daily_quota"]), bool(row["active"]), row["quota_day"],
                   int(row["quota_used"] or 0))


# -- pure checks -----------------------------------------------------------------------------------------------
def check_scope(partner: Partner, identity: DeviceIdentity) -> None:
    """Raise the refusal when the partner may not ask for this device: facility, sensor type, serial prefix."""
    if ALL not in partner.facilities and identity.facility not in partner.facilities:
        raise OnboardingError("facility_not_allowed", f"facility {identity.facility}")
    if ALL not in partner.sensor_types and identity.type_code not in partner.sensor_types:
        raise OnboardingError("sensor_type_not_allowed", f"sensor type {identity.type_code}")
    if partner.serial_prefix and not identity.serial.startswith(partner.serial_prefix):
        raise OnboardingError("serial_not_allowed", f"serial {identity.serial} does not start with "
                                                    f"{partner.serial_prefix}")


def quota_day(now: dt.datetime | None = None) -> str:
    """The UTC day a quota unit counts against, as quota_day stores it (YYYY-MM-DD)."""
    return (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).strftime("%Y-%m-%d")


def seconds_to_next_day(now: dt.datetime | None = None) -> int:
    """Retry-After of a quota refusal: whole seconds until the next UTC midnight (at least 1)."""
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return max(1, int((midnight - now).total_seconds() + 0.999))


def parse_list(values: Sequence[str] | None) -> str:
    """CLI/API values -> the column text: comma list without blanks or duplicates, or '*'."""
    found = list(dict.fromkeys(v.strip() for value in values or () for v in value.split(",") if v.strip()))
    return ",".join(found) if found and ALL not in found else ALL


# -- the record ------------------------------------------------------------------------------------------------
class PartnerDirectory:
    """The partners table. Reads are not cached: one indexed row per request, and a disabled partner is refused
    from the next request on, on every instance."""

    def __init__(self, database: Database):
        self._db = database

    def get(self, partner_id: str) -> Partner | None:
        row = self._db.fetch_one(f"SELECT {_COLUMNS} FROM partners WHERE partner_id = ?",  # noqa: S608
                                 [partner_id[:64]])
        return None if row is None else _partner(row)

    def all(self) -> list[Partner]:
        return [_partner(r) for r in self._db.fetch_all(f"SELECT {_COLUMNS} FROM partners ORDER BY name")]  # noqa: S608

    def create(self, name: str, *, facilities: Sequence[str] = (), sensor_types: Sequence[str] = (),
               serial_prefix: str | None = None, daily_quota: int = 1000, partner_id: str | None = None) -> Partner:
        """A new active partner; partner_id is its Entra application's client ID (a new UUID when not given)."""
        if not name.strip():
            raise OnboardingError("invalid_request", "a partner needs a name")
        if daily_quota < 0:
            raise OnboardingError("invalid_request", "the daily quota is not negative")
        partner_id = (partner_id or str(uuid.uuid4())).strip()
        if self.get(partner_id) is not None:
            raise OnboardingError("invalid_request", f"partner {partner_id} exists")
        self._db.execute(
            "INSERT INTO partners (partner_id, name, facilities, sensor_types, serial_prefix, daily_quota, quota_used, "
            "active, created_at) VALUES (?, ?, ?, ?, ?, ?, 0, 1, ?)",
            [partner_id, name.strip()[:200], parse_list(facilities), parse_list(sensor_types),
             serial_prefix or None, int(daily_quota), sql_utc(dt.datetime.now(dt.UTC))])
        return self.get(partner_id)  # type: ignore[return-value]

    def set_active(self, partner_id: str, active: bool) -> bool:
        return self._db.execute("UPDATE partners SET active = ? WHERE partner_id = ?",
                                [1 if active else 0, partner_id]) == 1

    def take_quota(self, partner_id: str, now: dt.datetime | None = None) -> bool:
        """Take one unit of today's quota: one conditional UPDATE, atomic on Azure SQL and SQLite, so concurrent
        instances never hand out more than daily_quota. A new UTC day starts the count again at 1."""
        day = quota_day(now)
        return self._db.execute(
            "UPDATE partners SET quota_used = CASE WHEN quota_day = ? THEN quota_used + 1 ELSE 1 END, quota_day = ? "
            "WHERE partner_id = ? AND active = 1 AND daily_quota > 0 "
            "AND (quota_day IS NULL OR quota_day <> ? OR quota_used < daily_quota)",
            [day, day, partner_id, day]) == 1

    def return_quota(self, partner_id: str, now: dt.datetime | None = None) -> None:
        """Give back a unit taken for a certificate that was not issued after all (signing failed)."""
        self._db.execute("UPDATE partners SET quota_used = quota_used - 1 "
                         "WHERE partner_id = ? AND quota_day = ? AND quota_used > 0", [partner_id, quota_day(now)])


# -- the credential --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenSettings:
    issuer: str
    audience: str
    jwks_url: str
    leeway_s: float = 60


class PartnerAuthenticator:
    """`Authorization: Bearer <token>` -> the active Partner, or the refusal (401 for no or an invalid credential,
    403 for a valid token without the partner role or of an unknown or disabled partner)."""

    def __init__(self, token_settings: TokenSettings | None, directory: PartnerDirectory, jwks_client=None):
        self._settings = token_settings
        self._directory = directory
        self._jwks = jwks_client

    def _keys(self):
        if self._jwks is None:
            import jwt

            self._jwks = jwt.PyJWKClient(self._settings.jwks_url, cache_keys=True, lifespan=3600, timeout=5)
        return self._jwks

    def claims(self, authorization: str | None) -> dict:
        if self._settings is None:
            raise OnboardingError("configuration_error", "PARTNER_TOKEN_ISSUER, PARTNER_TOKEN_AUDIENCE and "
                                                         "PARTNER_TOKEN_JWKS_URL must be set to accept partners")
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise OnboardingError("partner_credential_required")
        import jwt

        try:
            key = self._keys().get_signing_key_from_jwt(token.strip()).key
        except jwt.PyJWKClientConnectionError as exc:
            raise OnboardingError("dependency_unavailable", "the token signing keys could not be read") from exc
        except jwt.PyJWTError as exc:
            raise OnboardingError("partner_credential_invalid", type(exc).__name__) from None
        try:
            return jwt.decode(token.strip(), key, algorithms=["RS256"], audience=self._settings.audience,
                              issuer=self._settings.issuer, leeway=self._settings.leeway_s,
                              options={"require": ["exp", "iss", "aud"]})
        except jwt.PyJWTError as exc:
            raise OnboardingError("partner_credential_invalid", type(exc).__name__) from None

    def partner(self, authorization: str | None) -> Partner:
        claims = self.claims(authorization)
        roles = claims.get("roles") or []
        if not isinstance(roles, list) or PARTNER_ROLE not in roles:
            raise OnboardingError("partner_not_authorized", f"the token does not hold the app role {PARTNER_ROLE}")
        partner_id = claims.get("azp") or claims.get("appid")
        if not isinstance(partner_id, str) or not partner_id:
            raise OnboardingError("partner_not_authorized", "the token names no calling application")
        found = self._directory.get(partner_id)
        if found is None or not found.active:
            raise OnboardingError("partner_not_authorized", f"partner {partner_id[:64]} is "
                                  f"{'disabled' if found else 'not registered'}")
        return found


# -- operator re-issue -----------------------------------------------------------------------------------------
def authorize_reissue(device_id: str, reason: str, operator: str, *, records, revoker, audit) -> dict:
    """An operator lets a device get a new certificate: its active certificates are superseded through the
    revocation path (reason superseded, which accepts only certificates issued to that device), and the reason is
    audited. The partner's next CSR for the device is then signed."""
    from cert_lifecycle.revocation import RevocationRequest
    from shared.identity import parse_device_id

    identity = parse_device_id(device_id)
    if reason not in REISSUE_REASONS:
        raise OnboardingError("invalid_request", f"re-issue reason must be one of {', '.join(REISSUE_REASONS)}")
    active = records.active_certificates(identity.device_id)
    if not active:
        raise OnboardingError("certificate_not_found", f"{identity.device_id} holds no active certificate")
    result = revoker.revoke(RevocationRequest(reason="superseded", revoked_by=f"{operator} (reissue: {reason})"[:255],
                                              device_ids=(identity.device_id,)))
    superseded = [r.serial_number for r in active]
    audit.certificate_event("reissue_authorized", device_id=identity.device_id, reason_code=reason, actor=operator,
                            details={"reason": reason, "superseded": superseded})
    unpublished = result.unpublished_error()
    return {"deviceId": identity.device_id, "reason": reason, "superseded": superseded,
            "crlPublished": unpublished is None}
