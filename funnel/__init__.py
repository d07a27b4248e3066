"""The onboarding funnel: allocated -> created -> configured -> acknowledged -> live; stuck sensors, digests."""

from funnel.functions import bp

__all__ = ["bp"]
