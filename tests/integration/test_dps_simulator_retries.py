"""The DPS simulator treats the webhook's answers as DPS does (local/dps/simulator.py, docs/contracts.md 1.3):
>= 429 retried 10 times with growing delays, then failed; 401 -> 400209; any other non-200 -> 400207; no hub or a
hub not linked -> 400208. The device sees DPS's code; the webhook's own code stays in webhook_code."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from local.dps.enrollments import Enrollment
from local.dps.simulator import DPS_RETRY_COUNT, DpsSimulator, dps_retry_delays
from local.serve import free_port
from tests.pki_helpers import make_ca

pytestmark = pytest.mark.integration
HUB = "hub-west.azure-devices.net"
RID = "sensor-temp-FAC03-SN482019"


class Webhook:
    """A webhook on a free port answering from a script of (status, body) pairs (the last one repeats)."""

    def __init__(self, answers):
        self.answers, self.calls = list(answers), 0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, body = hook.answers[min(hook.calls, len(hook.answers) - 1)]
                hook.calls += 1
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/allocate"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def refused(code):
    return {"error": {"code": code, "message": "m", "detail": "d"}}


@pytest.fixture
def ca():
    return make_ca("intermediate-ca-west", "west")


def register(ca, answers):
    hook = Webhook(answers)
    try:
        group = Enrollment("sensors-west", ca.certificate, [HUB], hook.url)
        dps = DpsSimulator([group], [HUB], [ca.certificate], {}, retry_scale=0.0001)
        dps.match_enrollment = lambda *args: group  # the chain check is test_dps_enrollments.py's subject
        dps.hubs[HUB] = SimpleNamespace(create_device=lambda *args, **kwargs: None)  # DPS's link to the hub
        waits: list[float] = []
        dps._sleep = waits.append
        return dps.register(ca.issue(RID), [ca.certificate]), hook.calls, waits
    finally:
        hook.close()


def test_dps_retry_schedule_is_the_tutorials():
    assert dps_retry_delays() == [1, 10, 19, 28, 37, 46, 55, 64, 73, 82]


def test_503_is_retried_then_succeeds(ca):
    result, calls, waits = register(ca, [(503, refused("crl_unavailable"))] * 3 + [(200, {"iotHubHostName": HUB})])
    assert calls == result.webhook_calls == 4 and len(waits) == 3
    assert (result.status, result.assigned_hub, result.webhook_status) == ("assigned", HUB, 200)


def test_503_is_given_up_after_dps_count(ca):
    result, calls, waits = register(ca, [(503, refused("dependency_unavailable"))])
    assert calls == 1 + DPS_RETRY_COUNT == result.webhook_calls
    assert waits == pytest.approx([d * 0.0001 for d in dps_retry_delays()])
    assert (result.status, result.error_code, result.error_number) == ("failed", "CustomAllocationFailed", 400207)
    assert (result.webhook_status, result.webhook_code) == (503, "dependency_unavailable")
    assert "dependency_unavailable" not in result.error_message  # the device never sees the webhook's body


@pytest.mark.parametrize(("status", "body", "code", "number", "webhook_code"), [
    (404, refused("unknown_facility"), "CustomAllocationFailed", 400207, "unknown_facility"),
    (403, refused("certificate_revoked"), "CustomAllocationFailed", 400207, "certificate_revoked"),
    (409, refused("no_hub_capacity"), "CustomAllocationFailed", 400207, "no_hub_capacity"),
    (401, {}, "CustomAllocationUnauthorizedAccess", 400209, "http_401"),
    (200, {"iotHubHostName": None}, "CustomAllocationIotHubNotSpecified", 400208, None),
    (200, {"iotHubHostName": "elsewhere.azure-devices.net"}, "CustomAllocationIotHubNotSpecified", 400208, None),
])
def test_other_answers_fail_at_once_with_dps_codes(ca, status, body, code, number, webhook_code):
    result, calls, waits = register(ca, [(status, body)])
    assert calls == 1 and waits == []
    assert (result.status, result.error_code, result.error_number, result.webhook_code) == (
        "failed", code, number, webhook_code)
