"""Event Grid for Azurite: Microsoft.Storage.BlobCreated for the templates container, delivered to the dev host.

Azurite publishes no events. In Azure a system topic on the storage account sends BlobCreated, filtered to the
templates container and `-sensor.json` (infra/modules/templates-events.bicep), to `on_template_changed`. Here a
poller lists the container every --interval seconds and, for each matching blob that is new or has a new ETag since
the previous listing, POSTs one event in the Event Grid schema to the dev host's Event Grid endpoint
(`/runtime/webhooks/EventGrid?functionName=on_template_changed`, header `aeg-event-type: Notification`), retrying
a failed delivery on Event Grid's schedule scaled down (docs/contracts.md 2.2). The first listing is the baseline:
what the seed wrote before the poller started raises no event.

Event shape (Microsoft Learn "Azure Blob Storage as an Event Grid source"; docs/contracts.md 2.4): topic the
account's resource ID, subject `/blobServices/default/containers/{container}/blobs/{blob}`, eventType
`Microsoft.Storage.BlobCreated`, data {api, clientRequestId, requestId, eTag, contentType, contentLength, blobType,
url, sequencer, storageDiagnostics}, dataVersion "", metadataVersion "1". Deviation: `api` is always PutBlob (a
listing cannot tell PutBlob from PutBlockList).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import requests

from local.azurite import DEV_ACCOUNT
from local.azurite import connection_string as azurite_connection_string

log = logging.getLogger("local.blob_events")

HOST_URL = "http://127.0.0.1:7071"
FUNCTION = "on_template_changed"
SUFFIX = "-sensor.json"
TOPIC = (f"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local/providers/"
         f"Microsoft.Storage/storageAccounts/{DEV_ACCOUNT}")
RETRY_DELAYS_S = (1, 3, 6, 10, 30)  # Event Grid's 10 s, 30 s, 1 min, 5 min, 10 min ... scaled down


def blob_created_event(container: str, container_url: str, name: str, etag: str, size: int | None,
                       content_type: str | None, sequencer: int) -> dict:
    """One BlobCreated event in the Event Grid schema, as Event Grid delivers it."""
    return {
        "topic": TOPIC,
        "subject": f"/blobServices/default/containers/{container}/blobs/{name}",
        "eventType": "Microsoft.Storage.BlobCreated",
        "eventTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z"),
        "id": str(uuid.uuid4()),
        "data": {
            "api": "PutBlob",
            "clientRequestId": str(uuid.uuid4()),
            "requestId": str(uuid.uuid4()),
            "eTag": etag.strip('"'),
            "contentType": content_type or "application/octet-stream",
            "contentLength": size or 0,
            "blobType": "BlockBlob",
            "url": f"{container_url.rstrip('/')}/{name}",
            "sequencer": f"{sequencer:032X}",
            "storageDiagnostics": {"batchId": str(uuid.uuid4())},
        },
        "dataVersion": "",
        "metadataVersion": "1",
    }


class BlobEvents:
    def __init__(self, container, deliver: Callable[[list[dict]], None], suffix: str = SUFFIX):
        self._container = container  # azure.storage.blob ContainerClient
        self._deliver = deliver
        self._suffix = suffix
        self._seen: dict[str, str] | None = None
        self._sequencer = int(time.time() * 1000) << 16

    def poll(self) -> list[dict]:
        """List the container once; deliver (and return) an event per new or rewritten matching blob."""
        listing = {b.name: b for b in self._container.list_blobs() if b.name.endswith(self._suffix)
                   and "/" not in b.name}
        current = {name: b.etag for name, b in listing.items()}
        if self._seen is None:
            self._seen = current
            return []
        events = []
        for name, etag in sorted(current.items()):
            if self._seen.get(name) != etag:
                blob = listing[name]
                self._sequencer += 1
                content_type = getattr(getattr(blob, "content_settings", None), "content_type", None)
                events.append(blob_created_event(self._container.container_name, self._container.url, name, etag,
                                                 blob.size, content_type, self._sequencer))
        for event in events:
            self._deliver([event])
        self._seen = {**self._seen, **current}
        return events


def webhook_deliverer(url: str, timeout_s: float = 30, sleep: Callable[[float], None] = time.sleep):
    """POST one batch as Event Grid does; retry on failure (2xx other than 200-204 or none: retried)."""
    session = requests.Session()
    session.trust_env = False

    def deliver(batch: list[dict]) -> None:
        for attempt, delay in enumerate((0, *RETRY_DELAYS_S)):
            if delay:
                sleep(delay)
            try:
                response = session.post(url, json=batch, timeout=timeout_s,
                                        headers={"aeg-event-type": "Notification"})
                if response.status_code in (200, 201, 202, 203, 204):
                    return
                log.warning("delivery of %s answered %s (attempt %d)", batch[0]["subject"], response.status_code,
                            attempt + 1)
            except requests.RequestException as exc:
                log.warning("delivery of %s failed: %s (attempt %d)", batch[0]["subject"], type(exc).__name__,
                            attempt + 1)
        log.error("event for %s dropped after %d attempts", batch[0]["subject"], len(RETRY_DELAYS_S) + 1)

    return deliver


def _settings_values(path: Path | None) -> dict[str, str]:
    if path is None or not path.exists():
        return {}
    return json.loads(path.read_text()).get("Values", {})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.blob_events", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", type=Path, help="local.settings.json (TEMPLATES_CONTAINER)")
    parser.add_argument("--host-url", default=HOST_URL)
    parser.add_argument("--function", default=FUNCTION)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between listings (default 1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("azure").setLevel(logging.WARNING)
    from azure.storage.blob import BlobServiceClient

    values = _settings_values(args.settings)
    container_name = values.get("TEMPLATES_CONTAINER") or os.environ.get("TEMPLATES_CONTAINER") or \
        "sensor-configurations"
    client = BlobServiceClient.from_connection_string(azurite_connection_string(), connection_timeout=5,
                                                      read_timeout=20)
    url = f"{args.host_url.rstrip('/')}/runtime/webhooks/EventGrid?functionName={args.function}"
    poller = BlobEvents(client.get_container_client(container_name), webhook_deliverer(url))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log.info("BlobCreated for %s/*%s -> %s every %gs", container_name, SUFFIX, url, args.interval)
    while True:
        try:
            for event in poller.poll():
                log.info("BlobCreated %s (%s) delivered", event["subject"], event["data"]["eTag"])
        except Exception as exc:  # noqa: BLE001 - Azurite restarting or a listing failing: try again next round
            log.warning("listing failed: %s", type(exc).__name__)
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
