"""The product's Storage adapters against Azurite (Microsoft's emulator): blob and queue round-trips."""

import json

import pytest

from shared.bootstrap import Services
from shared.config import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def services(azurite):
    return Services(Settings({"STORAGE_CONNECTION_STRING": azurite}))


def test_blob_round_trip_with_etag_conditional_read(services):
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

    container = services.blob_service.get_container_client("round-trip")
    container.create_container()
    blob = container.get_blob_client("temperature-sensor.json")
    blob.upload_blob(json.dumps({"telemetry": {"intervalSeconds": 60}}), overwrite=True)
    downloaded = blob.download_blob()
    assert json.loads(downloaded.readall()) == {"telemetry": {"intervalSeconds": 60}}
    etag = downloaded.properties.etag
    blob.upload_blob(b"{}", overwrite=True)
    with pytest.raises(ResourceModifiedError):
        blob.upload_blob(b"[]", overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified)
    with pytest.raises(ResourceNotFoundError):
        container.get_blob_client("missing.json").download_blob()


def test_queue_messages_are_base64_like_the_functions_trigger_expects(services, azurite):
    from azure.storage.queue import QueueClient

    services.queue_service.create_queue("round-trip")
    queue = services.queue("round-trip")
    queue.send_message(json.dumps({"deviceId": "sensor-temp-FAC03-SN1"}))
    raw = QueueClient.from_connection_string(azurite, "round-trip").receive_message()  # no decode policy
    import base64

    assert json.loads(base64.b64decode(raw.content)) == {"deviceId": "sensor-temp-FAC03-SN1"}
    queue.send_message("second")
    assert queue.receive_message().content == "second"  # and the product reads them back as text
