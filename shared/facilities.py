"""The facilities table, read through one cached directory by every feature (allocation, certificates)."""

from __future__ import annotations

from dataclasses import dataclass

from shared.cache import TtlCache
from shared.errors import OnboardingError
from shared.sql import Database


@dataclass(frozen=True)
class Facility:
    code: str
    name: str
    region: str
    preferred_hub: str
    manager_email: str
    active: bool


_MISSING = Facility("", "", "", "", "", False)  # cached "not found", so unknown codes do not hit SQL every time


class FacilityDirectory:
    """Facilities by code, cached per code for ttl_s (FACILITY_CACHE_TTL_SECONDS)."""

    def __init__(self, database: Database, ttl_s: float, stale_s: float = 0.0, wait_s: float | None = None):
        """stale_s, wait_s: shared.cache.TtlCache (the webhook serves a row held while one refresh is in flight,
        and keeps it while SQL does not answer)."""
        self._db = database
        self._cache: TtlCache[Facility] = TtlCache(ttl_s, stale_s=stale_s, wait_s=wait_s)

    def _load(self, code: str) -> Facility:
        row = self._db.fetch_one(
            "SELECT facility_code, name, region, preferred_hub, manager_email, active FROM facilities "
            "WHERE facility_code = ?",
            [code],
        )
        if row is None:
            return _MISSING
        return Facility(row["facility_code"], row["name"], row["region"], row["preferred_hub"],
                        row["manager_email"], bool(row["active"]))

    def find(self, code: str) -> Facility | None:
        """The facility, or None when SQL has no such code; SQL errors propagate."""
        found = self._cache.get(code, lambda: self._load(code))
        return None if found is _MISSING else found

    def get(self, code: str) -> Facility:
        """The active facility `code`; raise unknown_facility, facility_inactive or dependency_unavailable."""
        try:
            facility = self.find(code)
        except Exception as exc:  # SQL unreachable: a fault, not a refusal
            raise OnboardingError("dependency_unavailable", f"facility look-up failed ({type(exc).__name__})") \
                from exc
        if facility is None:
            raise OnboardingError("unknown_facility", f"facility {code}")
        if not facility.active:
            raise OnboardingError("facility_inactive", f"facility {code}")
        return facility
