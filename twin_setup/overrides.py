"""Facility overrides from SQL (facility_overrides), cached per facility for TWIN_OVERRIDES_CACHE_SECONDS.

One query per facility and TTL reads the facility row and all its override rows together (LEFT JOIN), so an
unknown facility is told apart from a facility without overrides, and 300 devices of one plant cost one query.
Rows are parsed once when loaded; a row that is not a valid override fails only the devices it applies to.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from shared.cache import TtlCache
from shared.errors import OnboardingError
from shared.retry import TransientError
from shared.sql import Database
from twin_setup.configuration import Override, applicable, parse_override

_QUERY = (
    "SELECT f.facility_code AS facility_code, o.sensor_type AS sensor_type, o.overrides AS overrides, "
    "o.updated_at AS updated_at "
    "FROM facilities f LEFT JOIN facility_overrides o ON o.facility_code = f.facility_code "
    "WHERE f.facility_code = ?"
)


@dataclass(frozen=True)
class FacilityOverrides:
    facility: str
    known: bool
    overrides: tuple[Override, ...] = ()

    def for_template(self, template: str) -> list[Override]:
        return applicable(list(self.overrides), template)


class OverrideStore:
    def __init__(self, database: Database, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self._db = database
        self._cache: TtlCache[FacilityOverrides] = TtlCache(ttl_s, error_ttl_s=min(5.0, ttl_s), clock=clock)
        self._lock = threading.Lock()
        self.loads = 0  # SQL queries made (tests and the benchmark read it)

    def _load(self, facility: str) -> FacilityOverrides:
        with self._lock:
            self.loads += 1
        try:
            rows = self._db.fetch_all(_QUERY, [facility])
        except Exception as exc:
            raise TransientError(f"facility overrides of {facility}: {type(exc).__name__}") from exc
        if not rows:
            return FacilityOverrides(facility, known=False)
        overrides = tuple(
            parse_override(facility, row["sensor_type"], row["overrides"], row["updated_at"])
            for row in sorted(rows, key=lambda r: str(r["sensor_type"]))
            if row["sensor_type"] is not None
        )
        return FacilityOverrides(facility, True, overrides)

    def get(self, facility: str) -> FacilityOverrides:
        return self._cache.get(facility, lambda: self._load(facility))

    def for_device(self, facility: str, template: str) -> list[Override]:
        """The overrides for a facility's devices of one template, in merge order; unknown_facility if none."""
        found = self.get(facility)
        if not found.known:
            raise OnboardingError("unknown_facility", f"facility {facility}")
        return found.for_template(template)

    def changed_rows(self) -> list[dict]:
        """Every override row's key and updated_at (the periodic change check: one small query)."""
        try:
            return self._db.fetch_all("SELECT facility_code, sensor_type, updated_at FROM facility_overrides", [])
        except Exception as exc:
            raise TransientError(f"facility overrides: {type(exc).__name__}") from exc

    def invalidate(self) -> None:
        self._cache.invalidate()
