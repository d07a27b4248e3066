"""local.settings.json and host.json, read the way Core Tools and the Functions host read them.

local.settings.json: `Values` become environment variables, except those already set in the environment
(Core Tools skips them with a warning, so a shell export wins); `Host.LocalHttpPort` is the default port.
host.json: `extensions.http.routePrefix` (default "api"), `extensions.queues` (the Storage extension's
QueuesOptions defaults), `functionTimeout`. Values absent from the file take Azure's defaults, so a test can
pass a partial dict.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from local.host.ncrontab import parse_timespan

log = logging.getLogger("local.host")

DEFAULT_PORT = 7071
_SETTING_REFERENCE = re.compile(r"%([^%]+)%")


@dataclass(frozen=True)
class LocalSettings:
    values: dict[str, str] = field(default_factory=dict)
    local_http_port: int | None = None
    applied: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()


def load_local_settings(path: Path | str | None, environ: MutableMapping[str, str] = os.environ) -> LocalSettings:
    """Read local.settings.json (a missing file is fine) and export its Values into environ."""
    if path is None or not Path(path).exists():
        return LocalSettings()
    data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    if data.get("IsEncrypted"):
        raise ValueError(f"{path}: IsEncrypted is true; this host reads plain-text settings only "
                         "(run `func settings decrypt` or set IsEncrypted to false)")
    values = {str(k): "" if v is None else str(v) for k, v in (data.get("Values") or {}).items()}
    applied, skipped = [], []
    for name, value in values.items():
        if name in environ:
            skipped.append(name)
            log.warning("Skipping '%s' from local settings as it's already defined in current environment "
                        "variables.", name)
        else:
            environ[name] = value
            applied.append(name)
    port = (data.get("Host") or {}).get("LocalHttpPort")
    return LocalSettings(values, int(port) if port else None, tuple(applied), tuple(skipped))


def load_host_json(path: Path | str | None) -> dict[str, Any]:
    if path is None or not Path(path).exists():
        return {}
    return json.loads(Path(path).read_text(encoding="utf-8-sig"))


@dataclass(frozen=True)
class QueueOptions:
    """extensions.queues with the Storage extension's defaults (QueuesOptions)."""

    max_dequeue_count: int = 5
    visibility_timeout: timedelta = timedelta(0)
    max_polling_interval: timedelta = timedelta(minutes=1)
    batch_size: int = 16
    new_batch_threshold: int | None = None
    message_encoding: str = "base64"

    @classmethod
    def from_host_json(cls, host_json: Mapping[str, Any]) -> QueueOptions:
        raw = (host_json.get("extensions") or {}).get("queues") or {}
        default = cls()
        options = cls(
            max_dequeue_count=int(raw.get("maxDequeueCount", default.max_dequeue_count)),
            visibility_timeout=_timespan(raw, "visibilityTimeout", default.visibility_timeout),
            max_polling_interval=_timespan(raw, "maxPollingInterval", default.max_polling_interval),
            batch_size=int(raw.get("batchSize", default.batch_size)),
            new_batch_threshold=int(raw["newBatchThreshold"]) if raw.get("newBatchThreshold") is not None else None,
            message_encoding=str(raw.get("messageEncoding", default.message_encoding)).lower(),
        )
        if not 1 <= options.batch_size <= 32:
            raise ValueError(f"host.json extensions.queues.batchSize must be 1-32, got {options.batch_size}")
        if options.max_dequeue_count < 1:
            raise ValueError("host.json extensions.queues.maxDequeueCount must be at least 1")
        if options.message_encoding not in ("base64", "none"):
            raise ValueError("host.json extensions.queues.messageEncoding must be 'base64' or 'none', "
                             f"got {options.message_encoding!r}")
        return options


@dataclass(frozen=True)
class HostOptions:
    route_prefix: str = "api"
    queues: QueueOptions = field(default_factory=QueueOptions)
    function_timeout: timedelta | None = None

    @classmethod
    def from_host_json(cls, host_json: Mapping[str, Any]) -> HostOptions:
        http = (host_json.get("extensions") or {}).get("http") or {}
        prefix = str(http.get("routePrefix", "api")).strip("/")
        timeout = host_json.get("functionTimeout")
        return cls(
            route_prefix=prefix,
            queues=QueueOptions.from_host_json(host_json),
            function_timeout=_timespan(host_json, "functionTimeout", None) if timeout not in (None, -1) else None,
        )


def _timespan(section: Mapping[str, Any], key: str, default: timedelta | None) -> timedelta | None:
    """A host.json duration: a TimeSpan string, or a number of milliseconds (the 1.x form)."""
    value = section.get(key)
    if value is None:
        return default
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(milliseconds=value)
    parsed = parse_timespan(str(value))
    if parsed is None:
        raise ValueError(f"host.json {key}: '{value}' is not a TimeSpan (hh:mm:ss)")
    return parsed


def resolve_setting_references(text: str, environ: Mapping[str, str] = os.environ) -> str:
    """Replace `%Name%` with app setting Name, as binding expressions in schedules and queue names allow."""
    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise ValueError(f"'%{name}%' does not resolve to a value: app setting '{name}' is not defined")
        return environ[name]

    return _SETTING_REFERENCE.sub(substitute, text)
