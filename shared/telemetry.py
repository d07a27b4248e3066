"""Telemetry events: one structured log record plus OpenTelemetry metrics per event.

In Azure the Python worker exports both to Application Insights (PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY,
host.json telemetryMode OpenTelemetry); locally the metrics API is a no-op and the log line remains. Events
carry the error-catalogue code, device, facility, hub and duration, the fields the KQL in infra/ groups by.
Never pass secrets here.
"""

from __future__ import annotations

import json
import logging
from functools import cache

log = logging.getLogger("onboarding.events")


@cache
def _meter():
    from opentelemetry import metrics

    return metrics.get_meter("sensor-onboarding")


@cache
def _counter(name: str):
    return _meter().create_counter(name, unit="1")


@cache
def _histogram(name: str):
    return _meter().create_histogram(name, unit="ms")


def emit(event: str, duration_ms: float | None = None, **fields) -> None:
    """Record event (e.g. "allocation") with its outcome fields and, when given, its duration."""
    attributes = {k: v for k, v in fields.items() if v is not None and isinstance(v, str | int | float | bool)}
    _counter(f"onboarding.{event}").add(1, attributes)
    if duration_ms is not None:
        _histogram(f"onboarding.{event}.duration").record(duration_ms, attributes)
    record = {"event": event, **fields}
    if duration_ms is not None:
        record["durationMs"] = round(duration_ms, 2)
    log.info("%s %s", event, json.dumps(record, default=str, sort_keys=True),
             extra={"custom_dimensions": record})
