"""Revocation enforced at DPS, wired end to end on `make run`'s stack (fixed ports): a certificate revoked for cause
over HTTP (POST /api/certificates/revoke, admin key) leaves a disabled individual enrollment in the DPS service API
emulator (the stack's `dps` process), written by the function app with its managed identity's token; the DPS
simulator, reading that emulator's store, refuses the device without calling the webhook while another device of the
same enrollment group is allocated; `onboarding certs allow` lets the device back in with a re-issued certificate,
and the CRL still refuses the revoked one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from local.fleet.device import SimulatedSensor
from local.fleet.scenario import Scenario, ScenarioOptions
from local.secrets import stack_secret
from local.settings_file import DPS_SERVICE_PORT
from tests.stack_helpers import CACHE_TTL, app_environment, http, sign_headers

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
REVOKED, OTHER = "sensor-temp-FAC03-SN31000001", "sensor-press-FAC03-SN31000002"  # FAC03: west, group sensors-west


@pytest.fixture(scope="module")
def keys(stack):
    return {"function": stack_secret(stack.state_dir, "function-key-default"),
            "master": stack_secret(stack.state_dir, "function-master-key")}


@pytest.fixture(scope="module")
def dps(stack, services):
    """The DPS simulator as `make demo` builds it: a group per regional CA, and the emulator's enrollment store."""
    with app_environment(stack.settings_path):
        return Scenario(services, stack.state_dir, ScenarioOptions()).dps([])


@pytest.fixture(scope="module")
def sensors(stack, keys):
    return {REVOKED: manufacture(REVOKED, keys["function"]), OTHER: manufacture(OTHER, keys["function"])}


def manufacture(device_id: str, function_key: str) -> SimulatedSensor:
    """A sensor whose certificate the product issued (sign_csr over HTTP), so the register keeps it."""
    sensor = SimulatedSensor(device_id)
    status, body = http("POST", "/api/certificates/sign", {"csr": sensor.csr_pem()}, key=function_key,
                        headers=sign_headers())
    assert status == 200, body
    sensor.install_certificate(body)
    return sensor


def enrollments(state_dir: Path) -> dict[str, dict]:
    """`python -m local.dps enrollments --json`, as a developer lists them."""
    done = subprocess.run([sys.executable, "-m", "local.dps", "enrollments", "--state-dir", str(state_dir), "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    return {row["registrationId"]: row for row in json.loads(done.stdout)}


def decisions(services, device_id: str) -> int:
    """Allocation decisions the webhook audited for the device (every call of the webhook writes one)."""
    return services.database.fetch_one("SELECT COUNT(*) AS n FROM provisioning_events WHERE registration_id = ?",
                                       [device_id])["n"]


def test_the_stack_serves_the_dps_service_api_and_names_it_in_the_app_settings(stack):
    values = json.loads(stack.settings_path.read_text())["Values"]
    assert values["DPS_SERVICE_HOSTNAME"] == f"localhost:{DPS_SERVICE_PORT}"
    assert stack.children["dps"].poll() is None


def test_a_device_revoked_for_cause_over_http_is_refused_by_dps_itself(stack, services, keys, dps, sensors):
    revoked, other = sensors[REVOKED], sensors[OTHER]
    serial = format(revoked.certificate.serial_number, "X")

    status, body = http("POST", "/api/certificates/revoke", {"deviceId": REVOKED, "reason": "keyCompromise",
                                                             "revokedBy": "integration-test"}, key=keys["master"])
    assert status == 200, body
    # The function app wrote the enrollment with its managed identity's token (the emulator accepted it).
    assert body["disallowedAtDps"] == [REVOKED] and body["warnings"] == [], body
    audit = services.database.fetch_all("SELECT reason_code, actor, details FROM certificate_events "
                                        "WHERE action = 'dps_disallowed' AND device_id = ?", [REVOKED])
    assert [(r["reason_code"], r["actor"]) for r in audit] == [("keyCompromise", "integration-test")]
    assert json.loads(audit[0]["details"])["serialNumbers"] == [serial]

    listed = enrollments(stack.state_dir)[REVOKED]
    assert listed["provisioningStatus"] == "disabled" and listed["serialNumber"] == serial

    refused = revoked.power_on(dps)
    assert (refused.status, refused.error_code) == ("disabled", "enrollment_disabled"), refused
    assert refused.enrollment == f"individual:{REVOKED}" and refused.assigned_hub is None
    assert refused.webhook_status is None and decisions(services, REVOKED) == 0, "DPS never asked the webhook"

    allocated = other.power_on(dps)
    assert allocated.status == "assigned", allocated
    assert allocated.enrollment == "group:sensors-west" and allocated.assigned_hub == "localhost:8441"
    assert decisions(services, OTHER) == 1


def test_a_re_issued_device_is_allowed_back_with_onboarding_certs_allow(stack, services, keys, dps, sensors):
    reissued = manufacture(REVOKED, keys["function"])
    # The disabled enrollment matches by registration ID: until it is deleted the new certificate is refused too.
    assert reissued.power_on(dps).status in ("disabled", "failed")
    assert decisions(services, REVOKED) == 0

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "cli", "--json", "--settings", str(stack.settings_path), "certs",
                           "allow", REVOKED, "--allowed-by", "integration-test"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["allowed"] is True
    assert answer["activeCertificates"] == [format(reissued.certificate.serial_number, "X")]
    assert REVOKED not in enrollments(stack.state_dir)
    allowed = services.database.fetch_all("SELECT actor FROM certificate_events WHERE action = 'dps_allowed' "
                                          "AND device_id = ?", [REVOKED])
    assert [r["actor"] for r in allowed] == ["integration-test"]

    back = reissued.power_on(dps)
    assert back.status == "assigned" and back.enrollment == "group:sensors-west", back

    # The revoked certificate now reaches the webhook through the group, and the CRL (re-published when it was
    # revoked) refuses it there.
    time.sleep(CACHE_TTL + 0.5)
    again = sensors[REVOKED].power_on(dps)
    assert (again.status, again.webhook_status, again.webhook_code) == ("failed", 403, "certificate_revoked"), again
    assert again.error_code == "CustomAllocationFailed", again  # what the device sees (DPS's 400207)
