"""DPS custom allocation webhook: POST /api/allocate."""

from allocation.functions import bp

__all__ = ["bp"]
