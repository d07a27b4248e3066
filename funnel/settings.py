"""The onboarding funnel's own app settings, read through the shared Settings accessors (validated at first use).

| setting | default | meaning |
|---|---|---|
| FUNNEL_STUCK_CREATED_SECONDS | 600 | created on its hub and not configured for this long: stuck at created |
| FUNNEL_STUCK_CONFIGURED_SECONDS | 900 | configured, and the device has not reported applying it: stuck at configured |
| FUNNEL_STUCK_ACKNOWLEDGED_SECONDS | 900 | applied, and no device-to-cloud message since: stuck at acknowledged |
| FUNNEL_LIVE_MARGIN_SECONDS | 2 | activity within this of the acknowledgement counts as the acknowledgement itself |
| FUNNEL_MAX_PAGES | 20 | query pages (1,000 twins each) per hub and run: the run's share of the hub's query throttle |
| FUNNEL_ALERT_EMAIL | CERT_ESCALATION_EMAIL | who gets a digest for a facility SQL has no manager for |
| CERT_ALERT_SENDER, ACS_ENDPOINT, ACS_CONNECTION_STRING | | (cert_lifecycle) e-mail only when these are set |

Digests always go to the alerts queue (certificate-alerts; `onboarding alerts` lists them), as the certificate and
capacity alerts do.
"""

from __future__ import annotations

from dataclasses import dataclass

from funnel.stages import StageLimits
from shared.config import SettingError, Settings


@dataclass(frozen=True)
class FunnelSettings:
    limits: StageLimits = StageLimits()  # noqa: RUF009 - frozen, so one shared default is safe
    max_pages: int = 20
    alert_email: str | None = None


def funnel_settings(settings: Settings) -> FunnelSettings:
    pages = settings.number("FUNNEL_MAX_PAGES", 20, minimum=1)
    if pages != int(pages):
        raise SettingError(f"app setting FUNNEL_MAX_PAGES must be a whole number, got {pages:g}")
    return FunnelSettings(
        limits=StageLimits(created_s=settings.number("FUNNEL_STUCK_CREATED_SECONDS", 600, minimum=1),
                           configured_s=settings.number("FUNNEL_STUCK_CONFIGURED_SECONDS", 900, minimum=1),
                           acknowledged_s=settings.number("FUNNEL_STUCK_ACKNOWLEDGED_SECONDS", 900, minimum=1),
                           live_margin_s=settings.number("FUNNEL_LIVE_MARGIN_SECONDS", 2)),
        max_pages=int(pages),
        alert_email=settings.get("FUNNEL_ALERT_EMAIL") or settings.get("CERT_ESCALATION_EMAIL"),
    )
