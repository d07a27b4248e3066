"""`onboarding certs allow CN`: a device disallowed at DPS by a revocation for cause comes back through its enrollment
group once its disabled individual enrollment is deleted (shared.dps.DpsEnrollments.allow); audited as dps_allowed.
Over real SQL (the HTTP contract tests' lifecycle fixture) with DPS faked."""

from __future__ import annotations

import json

from cli import main as cli_main
from shared.dps import DpsAccessDenied
from tests.contract.test_cert_http_contract import csr, lifecycle, sign  # noqa: F401 - lifecycle: fixture

DEVICE = "sensor-temp-FAC03-SN555001"


class Dps:
    host_name = "dps-x.azure-devices-provisioning.net"

    def __init__(self, disallowed=(), error=None):
        self.disallowed = set(disallowed)
        self.error = error
        self.asked: list[str] = []

    def allow(self, registration_id, budget=None):
        self.asked.append(registration_id)
        if self.error:
            raise self.error
        if registration_id in self.disallowed:
            self.disallowed.discard(registration_id)
            return True
        return False


def dps_allowed_rows(lc) -> list[dict]:
    return lc.db.fetch_all("SELECT device_id, actor FROM certificate_events WHERE action = 'dps_allowed'")


def test_allow_deletes_the_disabled_enrollment_and_audits_it(lifecycle, capsys):  # noqa: F811
    lifecycle.dps = Dps({DEVICE})
    assert sign(csr(DEVICE))[0] == 200  # the re-issued certificate
    assert cli_main.main(["certs", "allow", DEVICE, "--allowed-by", "soc"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{DEVICE}: disabled individual enrollment deleted at dps-x") and "no active" not in out
    assert lifecycle.dps.asked == [DEVICE]
    assert [(r["device_id"], r["actor"]) for r in dps_allowed_rows(lifecycle)] == [(DEVICE, "soc")]


def test_allow_with_nothing_to_allow_changes_nothing_and_says_so(lifecycle, capsys):  # noqa: F811
    lifecycle.dps = Dps()
    assert cli_main.main(["--json", "certs", "allow", DEVICE]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data == {"deviceId": DEVICE, "dps": Dps.host_name, "allowed": False, "activeCertificates": []}
    assert dps_allowed_rows(lifecycle) == []


def test_allow_needs_dps_settings_and_a_valid_cn(lifecycle, capsys):  # noqa: F811
    lifecycle.dps = None
    assert cli_main.main(["certs", "allow", DEVICE]) == 1
    assert capsys.readouterr().err.startswith("onboarding: error configuration_error: DPS_SERVICE_HOSTNAME")
    assert cli_main.main(["certs", "allow", "not-a-device"]) == 2
    assert "invalid_registration_id" in capsys.readouterr().err


def test_allow_refused_by_dps_is_a_dependency_failure(lifecycle, capsys):  # noqa: F811
    lifecycle.dps = Dps({DEVICE}, error=DpsAccessDenied("delete enrollment: HTTP 403"))
    assert cli_main.main(["certs", "allow", DEVICE]) == 1
    assert "error dependency_unavailable: DPS dps-x" in capsys.readouterr().err
