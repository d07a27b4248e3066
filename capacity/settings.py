"""Capacity planning's own app settings, read through the shared Settings accessors (validated at first use).

| setting | default | meaning |
|---|---|---|
| CAPACITY_WARN_UTILISATION | 0.8 | a region warns at this share of its accepting hubs' limit ... |
| CAPACITY_WARN_DAYS | 30 | ... or when it is projected full within this many days |
| CAPACITY_HEADROOM_DAYS | 90 | hubs to add: enough for this many days of growth below the warning share |
| CAPACITY_GROWTH_DAYS | 14 | growth per day: the mean of the allocations of this many last days |
| CAPACITY_ALERT_EMAIL | CERT_ESCALATION_EMAIL | the operations address the daily alert is e-mailed to |
| CERT_ALERT_SENDER, ACS_ENDPOINT, ACS_CONNECTION_STRING | | (cert_lifecycle) e-mail only when these are set |

The alert is always queued on the alerts queue (certificate-alerts, `onboarding alerts` lists it) and e-mailed when
Communication Services is configured, as the certificate digests are (cert_lifecycle/alerts.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from capacity.projection import Thresholds
from shared.config import SettingError, Settings


@dataclass(frozen=True)
class CapacitySettings:
    thresholds: Thresholds = Thresholds()  # noqa: RUF009 - frozen, so one shared default is safe
    growth_days: int = 14
    alert_email: str | None = None


def capacity_settings(settings: Settings) -> CapacitySettings:
    share = settings.number("CAPACITY_WARN_UTILISATION", 0.8)
    if not 0 < share <= 1:
        raise SettingError(f"app setting CAPACITY_WARN_UTILISATION must be a fraction in (0, 1], got {share}")
    growth_days = settings.number("CAPACITY_GROWTH_DAYS", 14, minimum=1)
    if growth_days != int(growth_days) or growth_days > 90:
        raise SettingError(f"app setting CAPACITY_GROWTH_DAYS must be a whole number of days from 1 to 90, "
                           f"got {growth_days:g}")
    return CapacitySettings(
        thresholds=Thresholds(warn_utilisation=share, warn_days=settings.number("CAPACITY_WARN_DAYS", 30),
                              headroom_days=settings.number("CAPACITY_HEADROOM_DAYS", 90)),
        growth_days=int(growth_days),
        alert_email=settings.get("CAPACITY_ALERT_EMAIL") or settings.get("CERT_ESCALATION_EMAIL"),
    )
