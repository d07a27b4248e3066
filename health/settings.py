"""The health endpoint's own app settings.

| setting | default | meaning |
|---|---|---|
| HEALTH_CHECK_TIMEOUT_SECONDS | 5 | every dependency check runs under this one deadline |
| HEALTH_CACHE_SECONDS | 5 | /api/health and /api/health/details answer from a report at most this old |
"""

from __future__ import annotations

from shared.config import Settings


def check_timeout_s(settings: Settings) -> float:
    return settings.number("HEALTH_CHECK_TIMEOUT_SECONDS", 5, minimum=0.1)


def cache_seconds(settings: Settings) -> float:
    return settings.number("HEALTH_CACHE_SECONDS", 5, minimum=0.1)
