"""Offloaded configurations that sensors can read, on the whole local stack: a configuration over twin setup's budget
goes to the private container, the twin carries a read-only user delegation SAS link (Azurite's Blob over HTTPS with
`--oauth basic`, the key requested with the app's identity), and a simulated sensor fetches it with nothing but the
URL, checks its hash and applies it; without its SAS the URL is refused; an expired link is refused, the refresh timer
writes a new one, and the sensor uses it without the configuration hash changing."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from local.fleet.device import SimulatedSensor
from local.fleet.device_link import ConfigurationFetchFailed, fetch_configuration
from local.fleet.scenario import Scenario, ScenarioOptions
from local.secrets import stack_secret
from shared.storage import redact_url
from tests.stack_helpers import app_environment, http, sign_headers
from twin_setup.offload import ConfigurationLinks, LinkPolicy, link_patch

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
DEVICE = "sensor-temp-FAC03-SN41000001"  # FAC03: a west plant
# Twin setup's budget at 2 KB (the hubs keep 32 KB), so one facility override sends the configuration to Blob.
STACK_SETTINGS = {"TWIN_DESIRED_BUDGET_BYTES": "2048", "TWIN_OVERRIDES_CACHE_SECONDS": "1"}
BIG = {"alerts": {f"band{i:02d}": {"warn": float(i), "label": f"zone {i} " + "x" * 30} for i in range(40)}}


@pytest.fixture(scope="module")
def keys(stack):
    return {"function": stack_secret(stack.state_dir, "function-key-default"),
            "master": stack_secret(stack.state_dir, "function-master-key")}


@pytest.fixture(scope="module")
def dps(stack, services):
    with app_environment(stack.settings_path):
        return Scenario(services, stack.state_dir, ScenarioOptions()).dps([])


@pytest.fixture(scope="module")
def sensor(stack, services, keys, dps):
    """A sensor of FAC03 whose temperature configuration is too large for the twin, powered on and configured."""
    services.database.execute("DELETE FROM facility_overrides WHERE facility_code = ? AND sensor_type = ?",
                              ["FAC03", "temperature"])  # the seed's row for it, replaced by a larger one
    services.database.execute("INSERT INTO facility_overrides (facility_code, sensor_type, overrides, updated_at) "
                              "VALUES (?, ?, ?, ?)", ["FAC03", "temperature", json.dumps(BIG), "2026-03-01 10:00:00"])
    sensor = SimulatedSensor(DEVICE)
    status, body = http("POST", "/api/certificates/sign", {"csr": sensor.csr_pem()}, key=keys["function"],
                        headers=sign_headers())
    assert status == 200, body
    sensor.install_certificate(body)
    assert sensor.power_on(dps, hub_ca=str(stack.state_dir / "tls" / "local-ca.pem")).status == "assigned"
    assert sensor.await_configuration(timeout_s=90), sensor.fetch_error
    yield sensor
    sensor.release()


def onboarding_of(services, sensor) -> tuple[dict, dict, dict]:
    twin = services.iothub().get_twin(sensor.hub, sensor.device_id)
    return twin.desired["onboarding"], twin.tags["onboarding"], twin.reported


def test_the_sensor_fetches_its_offloaded_configuration_through_a_read_only_link_and_checks_its_hash(
        services, sensor):
    desired, tags, reported = onboarding_of(services, sensor)
    assert tags["storage"] == "blob"
    assert sensor.downloads == 1 and sensor.applied_hash == desired["configurationHash"] == tags["configurationHash"]
    assert sensor.applied["alerts"]["band39"]["label"].startswith("zone 39")  # the part only the blob carried
    assert reported["configuration"]["hash"] == desired["configurationHash"]
    sas = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(desired["configurationUrl"]).query))
    assert (sas["sp"], sas["sr"], sas["spr"]) == ("r", "b", "https")
    assert sas["se"] == desired["configurationUrlExpiresAt"]
    assert urllib.parse.urlsplit(desired["configurationUrl"]).path.endswith(
        f"/{DEVICE}/{desired['configurationHash']}.json")


def test_the_url_without_its_sas_or_with_a_widened_one_is_refused(stack, services, sensor):
    desired, _, _ = onboarding_of(services, sensor)
    url, config_hash, ca = desired["configurationUrl"], desired["configurationHash"], sensor.hub_ca
    for refused in (redact_url(url), url.replace("sp=r&", "sp=rw&"),
                    url.replace(f"/{config_hash}.json", f"/{'0' * 64}.json")):
        with pytest.raises(ConfigurationFetchFailed) as failed:
            fetch_configuration(refused, config_hash, ca)
        assert failed.value.status in (401, 403, 404), failed.value


def test_an_expired_link_is_refused_and_the_timer_writes_a_new_one_that_the_sensor_uses(
        stack, services, keys, sensor):
    desired, tags, _ = onboarding_of(services, sensor)
    config_hash, configured_at = desired["configurationHash"], tags["configuredAt"]
    # A link signed two days ago, expired a day ago, as the twin would carry it had the timer not run.
    two_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    with app_environment(stack.settings_path):
        old = ConfigurationLinks(lambda: services.token_blob_service, "device-configurations", LinkPolicy(),
                                 now=lambda: two_days_ago).for_configuration(DEVICE, config_hash)
    twin = services.iothub().get_twin(sensor.hub, DEVICE)
    services.iothub().update_twin(sensor.hub, DEVICE, link_patch(old), twin.etag)

    sensor.applied_hash = None  # the sensor restarts without its configuration and fetches it again
    assert not sensor.follow_desired()
    assert (sensor.fetch_error.code, sensor.fetch_error.status) == ("fetch_failed", 403)
    _, _, reported = onboarding_of(services, sensor)
    assert reported["configuration"]["error"]["code"] == "fetch_failed"

    status, _ = http("POST", "/admin/functions/refresh_configuration_links", {"input": ""}, key=keys["master"])
    assert status == 202
    deadline = time.monotonic() + 60
    while onboarding_of(services, sensor)[0]["configurationUrlExpiresAt"] == old.expires_at:
        assert time.monotonic() < deadline, "the refresh timer wrote no new link"
        time.sleep(0.5)
    desired, tags, _ = onboarding_of(services, sensor)
    assert desired["configurationUrlExpiresAt"] > dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert desired["configurationHash"] == tags["configurationHash"] == config_hash  # not a new configuration
    assert tags["configuredAt"] == configured_at

    assert sensor.follow_desired()
    assert sensor.downloads == 2 and sensor.fetch_error is None
    _, _, reported = onboarding_of(services, sensor)
    assert reported["configuration"]["hash"] == config_hash and "error" not in reported["configuration"]
    assert sensor.follow_desired() and sensor.downloads == 2  # a renewed link alone is not applied again


def test_an_operator_command_reads_blob_from_a_shell_that_trusts_only_the_system_roots(stack):
    env = {**os.environ, "REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"}
    env.pop("SSL_CERT_FILE", None)
    done = subprocess.run([sys.executable, "-m", "cli", "--settings", str(stack.settings_path), "preview", DEVICE],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "blob" in done.stdout.lower()
