"""Dev host configuration: local.settings.json, host.json, connection settings, keys, function indexing."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import azure.functions as func
import pytest

from local.azurite import connection_string as azurite_default
from local.host import create_host_app
from local.host.keys import HostKeys
from local.host.loader import index_functions
from local.host.queues import queue_name_for, storage_connection_string
from local.host.settings import HostOptions, QueueOptions, load_local_settings, resolve_setting_references
from tests.integration import sample_function_app as sample

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_local_settings_export_values_but_never_override_the_environment(tmp_path):
    environ = {"ALREADY": "from-shell"}
    settings = load_local_settings(write(tmp_path / "local.settings.json", {
        "IsEncrypted": False, "Values": {"ALREADY": "from-file", "NEW": "x", "NUMBER": 3},
        "Host": {"LocalHttpPort": 7072}}), environ)
    assert environ == {"ALREADY": "from-shell", "NEW": "x", "NUMBER": "3"}
    assert settings.skipped == ("ALREADY",)
    assert settings.local_http_port == 7072


def test_missing_local_settings_is_fine_and_encrypted_is_refused(tmp_path):
    assert load_local_settings(tmp_path / "absent.json", {}).values == {}
    with pytest.raises(ValueError, match="IsEncrypted"):
        load_local_settings(write(tmp_path / "enc.json", {"IsEncrypted": True, "Values": {}}), {})


def test_host_json_defaults_are_azures():
    options = HostOptions.from_host_json({})
    assert options.route_prefix == "api"
    assert options.queues == QueueOptions(max_dequeue_count=5, visibility_timeout=timedelta(0),
                                          max_polling_interval=timedelta(minutes=1), batch_size=16,
                                          message_encoding="base64")
    assert options.function_timeout is None


def test_the_repositorys_host_json():
    options = HostOptions.from_host_json(json.loads((REPO / "host.json").read_text()))
    assert options.queues.max_polling_interval == timedelta(seconds=2)
    assert options.queues.visibility_timeout == timedelta(seconds=10)
    assert (options.queues.batch_size, options.queues.max_dequeue_count) == (16, 5)
    assert options.function_timeout == timedelta(minutes=5)


def test_host_json_variants():
    options = HostOptions.from_host_json({"extensions": {"http": {"routePrefix": ""}, "queues": {
        "maxPollingInterval": 2000, "messageEncoding": "None", "visibilityTimeout": "00:00:00.500"}}})
    assert options.route_prefix == ""
    assert options.queues.max_polling_interval == timedelta(seconds=2)  # a number means milliseconds (1.x)
    assert options.queues.message_encoding == "none"
    assert options.queues.visibility_timeout == timedelta(milliseconds=500)


@pytest.mark.parametrize(("queues", "message"), [
    ({"batchSize": 64}, "batchSize must be 1-32"),
    ({"maxDequeueCount": 0}, "maxDequeueCount"),
    ({"messageEncoding": "utf8"}, "messageEncoding"),
    ({"visibilityTimeout": "ten seconds"}, "not a TimeSpan"),
])
def test_bad_host_json_is_named(queues, message):
    with pytest.raises(ValueError, match=message):
        HostOptions.from_host_json({"extensions": {"queues": queues}})


def test_setting_references():
    assert resolve_setting_references("%Q%-items", {"Q": "renewals"}) == "renewals-items"
    with pytest.raises(ValueError, match="app setting 'MISSING' is not defined"):
        resolve_setting_references("%MISSING%", {})


def test_storage_connection_settings():
    assert storage_connection_string(None, {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}) == azurite_default()
    assert storage_connection_string("Jobs", {"AzureWebJobsJobs": "conn"}) == "conn"
    with pytest.raises(ValueError, match="'Other' does not exist"):
        storage_connection_string("Other", {})


def test_queue_names_resolve_and_are_validated():
    spec = next(f for f in index_functions(sample.app) if f.name == "work")
    assert queue_name_for(spec, {}) == sample.QUEUE_NAME
    bad = type(spec)(**{**spec.__dict__, "trigger": {**spec.trigger, "queueName": "Bad_Name"}})
    with pytest.raises(ValueError, match="invalid queue name 'Bad_Name'"):
        queue_name_for(bad, {})


def test_key_levels():
    keys = HostKeys(function_key="f", master_key="m")
    assert keys.allows("anonymous", None)
    assert [keys.allows("function", k) for k in (None, "", "x", "f", "m")] == [False, False, False, True, True]
    assert [keys.allows("admin", k) for k in ("f", "m")] == [False, True]


def test_keys_come_from_the_stack_state(tmp_path):
    first, again = HostKeys.from_state_dir(tmp_path), HostKeys.from_state_dir(tmp_path)
    assert first == again and first.function_key != first.master_key
    stored = json.loads((tmp_path / "secrets.json").read_text())
    assert stored["function-key-default"] == first.function_key
    assert stored["function-master-key"] == first.master_key


def test_index_describes_each_trigger():
    specs = {f.name: f for f in index_functions(sample.app)}
    assert index_functions(sample.app)  # indexing twice is fine (get_functions() itself refuses a 2nd call)
    assert specs["hello"].is_http and specs["hello"].methods == ("GET",) and specs["hello"].auth_level == "anonymous"
    assert specs["items"].auth_level == "function"  # the app's http_auth_level
    assert specs["items"].wants_context
    assert specs["async_hello"].is_async and specs["async_hello"].methods is None
    assert specs["nightly"].trigger["schedule"] == "0 30 2 * * *"
    assert specs["work"].trigger_type == "queueTrigger" and specs["work"].trigger["connection"] == "AzureWebJobsStorage"
    assert specs["on_event"].trigger_type == "eventGridTrigger"


def test_a_parameter_bound_to_nothing_is_refused_like_the_worker_does():
    app = func.FunctionApp()

    @app.route(route="x")
    def stray(req: func.HttpRequest, extra: str) -> str:
        return "never"

    with pytest.raises(ValueError, match=r"parameters \['extra'\]"):
        index_functions(app)


def test_a_bad_timer_schedule_fails_when_the_host_is_built(monkeypatch):
    app = func.FunctionApp()

    @app.timer_trigger(arg_name="timer", schedule="%SCAN_SCHEDULE%")
    def scan(timer: func.TimerRequest) -> None:
        pass

    monkeypatch.setenv("SCAN_SCHEDULE", "0 0 25 * * *")
    with pytest.raises(ValueError, match=r"Function scan: invalid timer schedule: .*hour field '25'"):
        create_host_app(app, {}, None)
    monkeypatch.setenv("SCAN_SCHEDULE", "0 0 2 * * *")
    assert create_host_app(app, {}, None).state.host.functions[0].name == "scan"
