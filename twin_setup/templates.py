"""Templates from Blob Storage, validated when read and cached by ETag.

A template is downloaded once per change, not once per device: within TWIN_TEMPLATE_CACHE_SECONDS the cached
copy is used without a request; after that one conditional GET (If-None-Match: <etag>) revalidates it, and a
304 keeps the cached copy for another period (shared.storage.BlobStore, the one conditional Blob reader).
Concurrent devices wait for the same read (single flight). A missing blob is unknown_template, an invalid one
invalid_template (both permanent for the device); a Storage failure is transient. Failures are remembered for a
few seconds so a broken dependency is not hammered.

Versions: every valid template read is also kept as `versions/{template}/{templateVersion}.json` in the same
container (first write wins, If-None-Match: *), so that a rollout can be rolled back to the version the fleet ran
before an upload replaced it. Azurite 3.37 (the local stack's) does not implement Blob versioning, and one
mechanism for Azure and the stack keeps rollback tested; the archive blobs do not end in `-sensor.json`, so they
start no rollout (the Event Grid filter and on_template_changed both check the suffix).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared import telemetry
from shared.cache import TtlCache
from shared.errors import OnboardingError
from shared.retry import TransientError
from shared.storage import BlobChanged, BlobStore, BlobTooLarge
from twin_setup.configuration import Template, parse_template, template_blob_name
from twin_setup.settings import TwinLimits

log = logging.getLogger(__name__)


@dataclass
class TemplateReads:
    downloads: int = 0  # full reads (200)
    not_modified: int = 0  # conditional reads answered 304
    missing: int = 0


class TemplateStore:
    def __init__(self, container: Callable[[], Any], limits: TwinLimits, ttl_s: float, max_bytes: int,
                 clock: Callable[[], float] = time.monotonic):
        self._blobs = BlobStore(container)  # container: -> azure.storage.blob ContainerClient, made once
        self._limits = limits
        self._max_bytes = max_bytes
        self._cache: TtlCache[Template] = TtlCache(ttl_s, error_ttl_s=min(5.0, ttl_s), clock=clock)
        self._known: dict[str, Template] = {}
        self._lock = threading.Lock()
        self.reads = TemplateReads()

    def get(self, name: str) -> Template:
        return self._cache.get(name, lambda: self._load(name))

    def invalidate(self) -> None:
        self._cache.invalidate()

    def _load(self, name: str) -> Template:
        from azure.core.exceptions import AzureError

        blob_name = template_blob_name(name)
        previous = self._known.get(name)
        started = time.perf_counter()
        try:
            read = self._blobs.read(blob_name, previous.etag if previous else None, max_bytes=self._max_bytes)
        except BlobTooLarge as exc:
            raise OnboardingError("invalid_template", f"{blob_name}: {exc.size} bytes, more than {self._max_bytes}") \
                from None
        except AzureError as exc:
            status = getattr(exc, "status_code", None)
            error = f"HTTP {status}" if status else type(exc).__name__
            telemetry.emit("template_read", (time.perf_counter() - started) * 1000, template=name,
                           outcome="unavailable", error=error)
            raise TransientError(f"template {blob_name}: {error}") from exc
        if read is None:
            self._count("missing", name, started, "missing")
            raise OnboardingError("unknown_template", f"no blob {blob_name}")
        if read.not_modified:
            self._count("not_modified", name, started, "notModified")
            return previous  # type: ignore[return-value]
        self._count("downloads", name, started, "downloaded")
        template = parse_template(name, read.data, self._limits, read.etag)
        with self._lock:
            self._known[name] = template
        self.archive(template, read.data)
        log.info("template %s version %s loaded (etag %s, %d bytes)", name, template.version, read.etag,
                 len(read.data))
        return template

    def _count(self, field: str, name: str, started: float, outcome: str) -> None:
        with self._lock:
            setattr(self.reads, field, getattr(self.reads, field) + 1)
        telemetry.emit("template_read", (time.perf_counter() - started) * 1000, template=name, outcome=outcome)

    # -- versions ------------------------------------------------------------------------------------------
    def current(self, name: str) -> tuple[Template, bytes]:
        """The template as the blob holds it now (no cache), with its bytes; unknown_template / invalid_template
        when missing or invalid, TransientError when Storage fails."""
        from azure.core.exceptions import AzureError

        blob_name = template_blob_name(name)
        try:
            read = self._blobs.read(blob_name, max_bytes=self._max_bytes)
        except BlobTooLarge as exc:
            raise OnboardingError("invalid_template", f"{blob_name}: {exc.size} bytes, more than {self._max_bytes}") \
                from None
        except AzureError as exc:
            raise TransientError(f"template {blob_name}: {type(exc).__name__}") from exc
        if read is None:
            raise OnboardingError("unknown_template", f"no blob {blob_name}")
        return parse_template(name, read.data, self._limits, read.etag), read.data

    def archive(self, template: Template, raw: bytes) -> None:
        """Keep this version (best effort: a failure is logged, never raised; the first copy of a version wins)."""
        try:
            self._blobs.write(version_blob_name(template.name, template.version), raw, "application/json", etag=None,
                              metadata={"template": template.name, "templateVersion": template.version})
        except BlobChanged:
            return
        except Exception as exc:  # noqa: BLE001 - keeping a version never fails the read that found it
            log.warning("could not keep version %s of template %s: %s", template.version, template.name,
                        type(exc).__name__)

    def version(self, name: str, version: str) -> tuple[Template, bytes] | None:
        """A kept version, or None."""
        read = self._blobs.read(version_blob_name(name, version), max_bytes=self._max_bytes)
        if read is None:
            return None
        return parse_template(name, read.data, self._limits, read.etag), read.data

    def etag(self, name: str) -> str | None:
        """The template blob's ETag now (None: no blob), valid or not."""
        found = self._blobs.properties(template_blob_name(name))
        return found.etag if found else None

    def replace(self, name: str, raw: bytes, etag: str | None) -> str:
        """Write the template blob If-Match etag (None: only if absent); returns the new ETag; BlobChanged if
        someone wrote in between."""
        return self._blobs.write(template_blob_name(name), raw, "application/json", etag=etag)


def version_blob_name(template: str, version: str) -> str:
    return f"{VERSIONS_PREFIX}{template}/{version}.json"


VERSIONS_PREFIX = "versions/"
