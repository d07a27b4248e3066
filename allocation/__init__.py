"""DPS custom allocation webhook: POST /api/allocate (auth level FUNCTION; DPS calls it with the key)."""

from allocation.handler import bp

__all__ = ["bp"]
