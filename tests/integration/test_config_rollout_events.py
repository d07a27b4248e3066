"""The stack's BlobCreated poller (local/blob_events.py) on a real Azurite (free ports, no whole stack): Event Grid
schema events for the templates container, read back through the Functions Event Grid converter as
on_template_changed reads them."""

from __future__ import annotations

import pytest
from azure.storage.blob import BlobServiceClient

from local.blob_events import BlobEvents
from local.host.eventgrid import to_trigger_value
from twin_setup.changes import template_of_blob
from twin_setup.events import blob_created

pytestmark = pytest.mark.integration


def test_a_new_or_rewritten_template_raises_one_blob_created_event_and_other_blobs_none(azurite):
    container = BlobServiceClient.from_connection_string(azurite).get_container_client("sensor-configurations")
    container.create_container()
    container.upload_blob("temperature-sensor.json", b"{}")
    delivered: list[list[dict]] = []
    poller = BlobEvents(container, delivered.append)
    assert poller.poll() == [] and delivered == []  # the first listing is the baseline

    answer = container.get_blob_client("temperature-sensor.json").upload_blob(b'{"templateVersion": "2"}',
                                                                               overwrite=True)
    container.upload_blob("versions/temperature/1.0.0.json", b"{}")  # kept copies raise nothing
    container.upload_blob("notes.txt", b"x")
    events = poller.poll()
    assert len(events) == 1 and delivered == [events]
    event = events[0]
    assert event["eventType"] == "Microsoft.Storage.BlobCreated" and event["metadataVersion"] == "1"
    assert event["subject"] == "/blobServices/default/containers/sensor-configurations/blobs/temperature-sensor.json"
    assert event["topic"].endswith("/providers/Microsoft.Storage/storageAccounts/devstoreaccount1")
    assert event["data"]["eTag"] == answer["etag"].strip('"') and event["data"]["contentLength"] == 24
    assert event["data"]["url"].endswith("/sensor-configurations/temperature-sensor.json")
    assert poller.poll() == []  # nothing new: nothing delivered again

    parsed = blob_created(to_trigger_value(event))
    assert (parsed.container, parsed.blob_name, parsed.etag) == ("sensor-configurations", "temperature-sensor.json",
                                                                 event["data"]["eTag"])
    assert template_of_blob(parsed.blob_name) == "temperature"
    assert template_of_blob("versions/temperature/1.0.0.json") is None
