"""GET /api/health (anonymous): the state of every configured dependency. Function: health."""

from health.functions import bp

__all__ = ["bp"]
