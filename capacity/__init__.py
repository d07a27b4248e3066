"""Capacity planning: each region's hub use and growth, days until full, hubs to add; a daily report and alert."""

from capacity.functions import bp

__all__ = ["bp"]
