"""`onboarding certs revoke`: the selectors, a dry run without --yes (exit 2, nothing written), the revocation with
--yes, progress on stderr, and a CRL that cannot be published (exit 1, the revocation kept). Runs the product's
Revoker over real SQL with Key Vault faked (the lifecycle fixture of the HTTP contract tests)."""

from __future__ import annotations

import json

import pytest

from cli import certs
from cli import main as cli_main
from shared.errors import OnboardingError
from tests.contract.test_cert_http_contract import csr, lifecycle, sign  # noqa: F401 - lifecycle: fixture


def issue(cn: str) -> str:
    status, body = sign(csr(cn))
    assert status == 200, body
    return body["serialNumber"]


def revocations(lc) -> list[str]:
    return sorted(r["serial_number"] for r in lc.db.fetch_all("SELECT serial_number FROM revocations"))


def args(*argv: str):
    return cli_main.build_parser().parse_args(["certs", "revoke", *argv])


# -- the request body ------------------------------------------------------------------------------------------
def test_one_serial_or_one_device_keeps_the_single_form():
    body = certs.revoke_body(args("--serial", "1f", "--issuer", "intermediate-ca-west", "--revoked-by", "me"))
    assert body == {"reason": "unspecified", "revokedBy": "me", "issuer": "intermediate-ca-west",
                    "serialNumber": "1f", "deviceId": None}
    assert certs.revoke_body(args("--device-id", "sensor-temp-FAC03-SN1"))["deviceId"] == "sensor-temp-FAC03-SN1"


def test_repeated_options_a_facility_or_a_file_make_the_bulk_form(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("# incident 42\n0A1B\n\nsensor-temp-FAC03-SN2  # spare\n  0c  \n")
    body = certs.revoke_body(args("--serial", "FF", "--device-id", "sensor-temp-FAC03-SN1", "--from-file",
                                  str(listing), "--reason", "keyCompromise"))
    assert (body["serialNumbers"], body["deviceIds"], body["facility"]) == (
        ["FF", "0A1B", "0c"], ["sensor-temp-FAC03-SN1", "sensor-temp-FAC03-SN2"], None)
    assert certs.revoke_body(args("--facility", "FAC03"))["facility"] == "FAC03"
    assert certs.revoke_body(args("--serial", "A", "--serial", "B"))["serialNumbers"] == ["A", "B"]


def test_a_missing_file_is_bad_input(capsys):
    assert cli_main.main(["certs", "revoke", "--from-file", "nowhere.txt"]) == 2
    assert capsys.readouterr().err.startswith("onboarding: error invalid_request: --from-file: ")


# -- dry run, then --yes ---------------------------------------------------------------------------------------
def test_without_yes_it_shows_what_it_would_revoke_and_exits_2_writing_nothing(lifecycle, capsys):  # noqa: F811
    west = [issue(f"sensor-temp-FAC03-D{n}") for n in range(2)]
    central = issue("sensor-vib-FAC07-D9")
    assert cli_main.main(["certs", "revoke", "--facility", "FAC03", "--device-id", "sensor-vib-FAC07-D9",
                          "--device-id", "sensor-temp-FAC03-NONE", "--reason", "keyCompromise"]) == 2
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == ("would revoke 3 certificate(s) of 3 device(s) as keyCompromise: "
                                   "1 in intermediate-ca-central, 2 in intermediate-ca-west")
    assert all(serial in out for serial in [*west, central]) and "sensor-temp-FAC03-NONE" in out
    assert err == ("onboarding: error confirmation_required: nothing revoked; run again with --yes to revoke these "
                   "3 certificate(s)\n")
    assert revocations(lifecycle) == []


def test_the_dry_run_as_json_lists_every_target(lifecycle, capsys):  # noqa: F811
    serial = issue("sensor-temp-FAC03-J1")
    assert cli_main.main(["--json", "certs", "revoke", "--serial", serial, "--serial", "ABC",
                          "--issuer", "intermediate-ca-west"]) == 2
    data = json.loads(capsys.readouterr().out)
    assert (data["dryRun"], data["certificates"], data["notOnRecord"]) == (True, 2, 1)
    assert [t["serialNumber"] for t in data["targets"]] == [serial, "ABC"]


def test_with_yes_it_revokes_and_prints_the_summary(lifecycle, capsys):  # noqa: F811
    serials = [issue(f"sensor-temp-FAC03-Y{n}") for n in range(2)]
    assert cli_main.main(["certs", "revoke", "--facility", "FAC03", "--reason", "cessationOfOperation", "--yes"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == "revoked 2 certificate(s), 0 already revoked: 2 in intermediate-ca-west"
    assert "intermediate-ca-west: CRL " in out and err == ""
    assert revocations(lifecycle) == sorted(serials)
    assert cli_main.main(["certs", "revoke", "--serial", serials[0], "--yes"]) == 0
    assert "revoked 0 certificate(s), 1 already revoked" in capsys.readouterr().out


def test_long_lists_report_progress_on_stderr(lifecycle, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setattr(certs, "PROGRESS_FROM", 3)
    west = [issue(f"sensor-temp-FAC03-P{n}") for n in range(2)]
    central = issue("sensor-vib-FAC07-P9")
    assert cli_main.main(["certs", "revoke", "--yes", *[a for s in [*west, central] for a in ("--serial", s)]]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "revoking: 2/3 certificates recorded", "revoking: 3/3 certificates recorded", "revoking: 1/2 CRLs published",
        "revoking: 2/2 CRLs published"]
    assert cli_main.main(["certs", "revoke", "--yes", "--serial", west[0], "--serial", central]) == 0
    assert capsys.readouterr().err == ""  # short lists: no progress


def test_an_unpublished_crl_exits_1_with_its_code_and_the_revocation_kept(lifecycle, capsys, monkeypatch):  # noqa: F811
    serial = issue("sensor-temp-FAC03-U1")

    def storage_down(authority, **kwargs):
        raise OnboardingError("dependency_unavailable", "CRL store unreachable")

    monkeypatch.setattr(lifecycle.publisher, "publish", storage_down)
    assert cli_main.main(["certs", "revoke", "--serial", serial, "--reason", "keyCompromise", "--yes"]) == 1
    out, err = capsys.readouterr()
    assert "intermediate-ca-west: CRL NOT PUBLISHED (dependency_unavailable)" in out
    assert err.startswith("onboarding: error revocation_not_published: intermediate-ca-west: ")
    assert revocations(lifecycle) == [serial]


@pytest.mark.parametrize("argv,code", [
    (["--device-id", "sensor-temp-FAC03-NOBODY", "--yes"], "certificate_not_found"),
    (["--facility", "FAC77"], "unknown_facility"),
    (["--device-id", "sensor-temp-FAC03-NOBODY", "--device-id", "sensor-temp-FAC03-NOONE"], "certificate_not_found"),
    (["--serial", "ABC", "--reason", "superseded", "--issuer", "intermediate-ca-west"], "superseded_not_on_record"),
])
def test_refusals_exit_2_with_their_code(lifecycle, capsys, argv, code):  # noqa: F811
    assert cli_main.main(["certs", "revoke", *argv]) == 2
    assert capsys.readouterr().err.startswith(f"onboarding: error {code}: ")


# -- a manufacturing lot ---------------------------------------------------------------------------------------
def test_a_lot_makes_the_bulk_form_and_is_revoked_after_a_dry_run(lifecycle, capsys):  # noqa: F811
    from tests.contract.test_partner_batch_contract import batch, entries

    assert certs.revoke_body(args("--lot", "LOT-A"))["lot"] == "LOT-A"
    _, body, _ = batch({"lot": "LOT-A", "csrs": entries("sensor-temp-FAC03-L1", "sensor-vib-FAC07-L2")})
    serials = sorted(r["serialNumber"] for r in body["results"])
    assert cli_main.main(["certs", "revoke", "--lot", "LOT-A", "--reason", "keyCompromise"]) == 2
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith("would revoke 2 certificate(s) of 2 device(s) as keyCompromise")
    assert "confirmation_required" in err and revocations(lifecycle) == []
    assert cli_main.main(["certs", "revoke", "--lot", "LOT-A", "--reason", "keyCompromise", "--yes"]) == 0
    assert revocations(lifecycle) == serials
    capsys.readouterr()
    assert cli_main.main(["certs", "revoke", "--lot", "LOT-NONE"]) == 2
    assert capsys.readouterr().err.startswith("onboarding: error lot_not_found: ")
    assert cli_main.main(["certs", "revoke", "--lot", "bad lot"]) == 2
    assert capsys.readouterr().err.startswith("onboarding: error invalid_lot: ")
