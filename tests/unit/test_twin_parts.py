"""Event normalisation, identification, retries, settings and IoT Hub error translation."""

from __future__ import annotations

import email.utils
import json
import time

import pytest
import requests
from msrest.exceptions import ClientRequestError, HttpOperationError

from local.host.eventgrid import to_trigger_value
from shared.config import SettingError, Settings
from shared.errors import OnboardingError
from shared.iothub import (
    DeviceGone,
    HubAccessDenied,
    HubRefused,
    HubResolver,
    PreconditionFailed,
    UnknownHub,
    translate,
)
from shared.retry import RetryBudget, RetryPolicy, TransientError, parse_retry_after
from twin_setup import settings as twin_settings
from twin_setup.events import MalformedEvent, from_trigger
from twin_setup.identify import identify, looks_like_ours

TOPIC = "/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.DEVICES/IOTHUBS/contoso-west"
DEVICE = "sensor-temp-FAC03-SN482019"


def eg(event_type="Microsoft.Devices.DeviceCreated", data=None, subject=f"devices/{DEVICE}", topic=TOPIC):
    return to_trigger_value({"id": "e1", "topic": topic, "subject": subject, "eventType": event_type,
                             "eventTime": "2026-03-01T10:00:00.1234567Z", "dataVersion": "1", "metadataVersion": "1",
                             "data": {"hubName": "contoso-west", "deviceId": DEVICE} if data is None else data})


def cloud(data=None, **extra):
    return to_trigger_value({"specversion": "1.0", "id": "c1", "source": TOPIC, "subject": f"devices/{DEVICE}",
                             "type": "Microsoft.Devices.DeviceCreated", "time": "2026-03-01T10:00:00Z",
                             "data": {"hubName": "contoso-west", "deviceId": DEVICE} if data is None else data,
                             **extra})


# -- events ------------------------------------------------------------------------------------------------
def test_event_grid_and_cloud_events_normalise_alike():
    a, b = from_trigger(eg()), from_trigger(cloud())
    assert (a.schema, b.schema) == ("eventGrid", "cloudEvents")
    for event in (a, b):
        assert (event.is_device_created, event.hub_name, event.device_id) == (True, "contoso-west", DEVICE)
        assert event.event_time.startswith("2026-03-01T10:00:00")


def test_hub_and_device_fall_back_to_topic_and_subject():
    for event in (eg(data={}), cloud(data={})):
        parsed = from_trigger(event)
        assert (parsed.hub_name, parsed.device_id) == ("contoso-west", DEVICE)


def test_cloud_event_data_as_a_json_string_is_read():
    assert from_trigger(cloud(data=json.dumps({"hubName": "h-1", "deviceId": DEVICE}))).hub_name == "h-1"


def test_other_event_types_are_not_parsed_further():
    parsed = from_trigger(eg("Microsoft.Devices.DeviceDeleted", data="not even an object"))
    assert not parsed.is_device_created


@pytest.mark.parametrize("event", [
    eg(data={"hubName": "contoso-west"}, subject=""),
    eg(data={"hubName": "contoso-west", "deviceId": "a/b"}, subject=""),
    eg(data={"hubName": "contoso-west", "deviceId": "x" * 129}, subject=""),
    eg(data={"hubName": "contoso-west", "deviceId": "other"}),
    eg(data={"deviceId": DEVICE}, topic="/not/a/hub"),
    eg(data={"hubName": "bad hub!", "deviceId": DEVICE}),
    eg(data=[1, 2]),
])
def test_malformed_device_created_events_are_refused(event):
    with pytest.raises(MalformedEvent):
        from_trigger(event)


# -- identification ----------------------------------------------------------------------------------------
TAGS = {"sensorType": "temperature", "sensorTypeCode": "temp", "facility": "FAC03", "serial": "SN482019",
        "onboarding": {"allocatedAt": "2026-03-01T09:59:58Z"}}


def test_tags_win_and_a_disagreeing_device_id_is_reported():
    found = identify(TAGS, "sensor-press-FAC01-OTHER")
    assert (found.source, found.mismatch, found.identity.device_id) == ("tags", True, DEVICE)
    assert identify(TAGS, DEVICE).mismatch is False
    assert identify(TAGS, "gateway-7").identity.facility == "FAC03"


def test_device_id_is_the_fallback():
    found = identify({}, "sensor-vib-FAC07-SN1")
    assert (found.source, found.identity.template, found.identity.facility) == ("deviceId", "vibration", "FAC07")
    assert identify({"facility": "FAC01"}, "sensor-vib-FAC07-SN1").source == "deviceId"  # partial tags


@pytest.mark.parametrize("tags, device_id, code", [
    ({**TAGS, "facility": "FAC03'; DROP TABLE facilities;--"}, DEVICE, "invalid_registration_id"),
    ({**TAGS, "sensorType": "pressure"}, DEVICE, "invalid_registration_id"),
    ({**TAGS, "sensorTypeCode": "laser"}, DEVICE, "unknown_sensor_type"),
    ({}, "my-test-device", "invalid_registration_id"),
    ({}, "sensor-laser-FAC01-SN1", "unknown_sensor_type"),
])
def test_hub_data_goes_through_the_strict_parser(tags, device_id, code):
    with pytest.raises(OnboardingError) as err:
        identify(tags, device_id)
    assert err.value.code == code


def test_devices_that_are_not_sensors_are_recognised():
    assert looks_like_ours({}, "sensor-laser-FAC01-SN1")
    assert looks_like_ours({"onboarding": {"allocatedAt": "x"}}, "odd-id")
    assert not looks_like_ours({"owner": "ops"}, "my-test-device")


# -- retries -----------------------------------------------------------------------------------------------
class FakeTime:
    def __init__(self):
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def flaky(errors: list[Exception], result="ok"):
    calls = []

    def call():
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return result

    return call, calls


def test_retry_after_is_honoured_and_backoff_used_without_it():
    t = FakeTime()
    budget = RetryBudget(RetryPolicy(attempts=4, base_s=0.5, budget_s=20), t.sleep, t.clock, rng=lambda: 0.0)
    call, calls = flaky([TransientError("429", 3.0), TransientError("503"), TransientError("timeout")])
    assert budget.run(call, "x") == "ok"
    assert t.slept == [3.0, 0.5, 1.0] and len(calls) == 4 and budget.retries == 3
    jittered = RetryBudget(RetryPolicy(), t.sleep, t.clock, rng=lambda: 1.0)
    assert jittered.delay_for(0, TransientError("429", 4.0)) == 5.0  # never earlier than Retry-After
    assert jittered.delay_for(2, TransientError("503")) == 2.0


def test_giving_up_after_the_attempts():
    t = FakeTime()
    budget = RetryBudget(RetryPolicy(attempts=2, base_s=0.1, budget_s=20), t.sleep, t.clock)
    call, calls = flaky([TransientError("a"), TransientError("b"), TransientError("c")])
    with pytest.raises(TransientError, match="b"):
        budget.run(call, "x")
    assert len(calls) == 2


def test_a_retry_after_beyond_the_budget_fails_fast_for_event_grid_to_redeliver():
    t = FakeTime()
    budget = RetryBudget(RetryPolicy(attempts=5, budget_s=20), t.sleep, t.clock)
    call, calls = flaky([TransientError("429", 60.0)])
    with pytest.raises(TransientError):
        budget.run(call, "x")
    assert t.slept == [] and len(calls) == 1


def test_the_budget_is_shared_by_all_calls_of_an_event():
    t = FakeTime()
    budget = RetryBudget(RetryPolicy(attempts=5, budget_s=5), t.sleep, t.clock)
    budget.run(flaky([TransientError("429", 4.0)])[0], "first")
    with pytest.raises(TransientError):
        budget.run(flaky([TransientError("429", 2.0)])[0], "second")


def test_parse_retry_after_reads_seconds_and_http_dates():
    assert parse_retry_after("7") == 7.0
    now = time.time()
    assert 9 <= parse_retry_after(email.utils.formatdate(now + 10, usegmt=True), now) <= 11
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None


# -- settings ----------------------------------------------------------------------------------------------
def test_settings_defaults_and_overrides():
    cfg = twin_settings.load(Settings({}), hub_hosts=["h1.azure-devices.net"])
    assert (cfg.limits.desired_bytes, cfg.limits.budget_bytes, cfg.template_ttl_s) == (32768, 24576, 60)
    assert cfg.templates_container == "sensor-configurations"
    assert cfg.configurations_container == "device-configurations"
    cfg = twin_settings.load(Settings({"TWIN_DESIRED_LIMIT_BYTES": "8192", "IOT_HUB_NAMES": "west=localhost:8441",
                                       "TWIN_ESSENTIAL_SECTIONS": "telemetry"}), hub_hosts=[])
    assert (cfg.limits.desired_bytes, cfg.limits.budget_bytes) == (8192, 8192)
    assert cfg.hub_names == (("west", "localhost:8441"),) and cfg.essential_sections == ("telemetry",)


@pytest.mark.parametrize("env, name", [
    ({"TWIN_DESIRED_BUDGET_BYTES": "40000"}, "TWIN_DESIRED_BUDGET_BYTES"),
    ({"TWIN_DESIRED_LIMIT_BYTES": "lots"}, "TWIN_DESIRED_LIMIT_BYTES"),
    ({"IOT_HUB_NAMES": "west"}, "IOT_HUB_NAMES"),
    ({"TWIN_RETRY_ATTEMPTS": "0"}, "TWIN_RETRY_ATTEMPTS"),
    ({"TWIN_MAX_DEPTH": "2.5"}, "TWIN_MAX_DEPTH"),
])
def test_bad_settings_name_the_variable(env, name):
    with pytest.raises(SettingError, match=name):
        twin_settings.load(Settings(env), hub_hosts=[])


def test_hub_names_resolve_explicitly_or_by_first_label():
    resolver = HubResolver(("contoso-west.azure-devices.net", "localhost:8441"), (("iothub-west-local",
                                                                                   "localhost:8441"),))
    assert resolver.resolve("CONTOSO-WEST") == "contoso-west.azure-devices.net"
    assert resolver.resolve("iothub-west-local") == "localhost:8441"
    with pytest.raises(UnknownHub):
        resolver.resolve("contoso-east")


# -- IoT Hub errors ----------------------------------------------------------------------------------------
def http_error(status: int, code: str = "", headers: dict | None = None) -> HttpOperationError:
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers or {})
    response._content = json.dumps({"Message": f"ErrorCode:{code};text", "ExceptionMessage": "t"}).encode()
    return HttpOperationError(lambda *a, **k: None, response)


@pytest.mark.parametrize("error, expected", [
    (http_error(404, "DeviceNotFound"), DeviceGone),
    (http_error(412, "PreconditionFailed"), PreconditionFailed),
    (http_error(429, "ThrottlingException", {"Retry-After": "2"}), TransientError),
    (http_error(503, "ServerBusy"), TransientError),
    (http_error(401, "IotHubUnauthorizedAccess"), HubAccessDenied),
    (http_error(403, "IotHubQuotaExceeded"), HubAccessDenied),
    (http_error(403, "DeviceModelMaxPropertiesExceeded"), HubRefused),
    (http_error(400, "ArgumentInvalid"), HubRefused),
    (ClientRequestError("Error occurred in request., ReadTimeout"), TransientError),
])
def test_sdk_errors_are_translated(error, expected):
    translated = translate(error, "updateTwin d on h")
    assert isinstance(translated, expected)
    if isinstance(translated, TransientError) and "429" in translated.reason:
        assert translated.retry_after_s == 2.0
    if isinstance(translated, HubRefused):
        assert translated.error_code in ("DeviceModelMaxPropertiesExceeded", "ArgumentInvalid")


def test_the_error_code_header_is_preferred():
    error = http_error(403, "Other", {"iothub-errorcode": "DeviceModelMaxPropertiesExceeded"})
    assert isinstance(translate(error, "x"), HubRefused)


def test_twin_setup_clients_keep_connections_and_leave_429_to_the_retry_budget():
    from azure.iot.hub import IoTHubRegistryManager

    from shared.iothub import RegistryClients

    key = "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U="
    clients = RegistryClients(lambda host: IoTHubRegistryManager.from_connection_string(
        f"HostName={host};SharedAccessKeyName=iothubowner;SharedAccessKey={key}"))
    manager = clients("contoso-west.azure-devices.net")
    assert clients("contoso-west.azure-devices.net") is manager  # once per process and hub
    retry = manager.protocol.config.retry_policy()
    assert manager.protocol.config.keep_alive is True
    assert not retry.is_retry("GET", 429, has_retry_after=True)
    assert not retry.is_retry("GET", 503, has_retry_after=False)
    assert retry.connect == 3
    clients.close()
