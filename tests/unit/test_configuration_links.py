"""Read-only links to offloaded configurations (twin_setup/offload.py): what the SAS allows, how long, signed with what,
never logged; which twins the refresh timer renews and what it writes."""

from __future__ import annotations

import datetime as dt
import logging
import urllib.parse

import pytest

from shared.config import SettingError, Settings
from shared.iothub import PreconditionFailed, Twin
from shared.storage import redact_url
from twin_setup.offload import (
    ConfigurationLinks,
    LinkPolicy,
    LinkRefresher,
    SignedLink,
    load_link_policy,
    needs_refresh,
    refresh_query,
)

NOW = dt.datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=dt.UTC)
HASH = "a" * 64


class FakeKey:
    """azure.storage.blob UserDelegationKey's fields, as Get User Delegation Key answers them."""

    def __init__(self, start: dt.datetime, expiry: dt.datetime):
        self.signed_oid, self.signed_tid = "00000000-0000-0000-0000-0000000000a1", "tenant"
        self.signed_start = start.strftime("%Y-%m-%dT%H:%M:%SZ")
        self.signed_expiry = expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
        self.signed_service, self.signed_version, self.value = "b", "2025-11-05", "a2V5LWJ5dGVz"
        self.signed_delegated_user_tid = None


class FakeBlobService:
    """What ConfigurationLinks uses of a BlobServiceClient authenticated by a token: no account key anywhere."""

    account_name = "stsensors"
    credential = object()  # a token credential, not a key

    def __init__(self):
        self.key_requests: list[tuple[dt.datetime, dt.datetime]] = []

    def get_user_delegation_key(self, start, expiry):
        self.key_requests.append((start, expiry))
        return FakeKey(start, expiry)

    def get_container_client(self, container):
        from azure.storage.blob import ContainerClient

        return ContainerClient(f"https://{self.account_name}.blob.core.windows.net", container)


class Clock:
    def __init__(self, now: dt.datetime):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def links(service: FakeBlobService | None = None, clock: Clock | None = None, policy: LinkPolicy | None = None):
    service = service or FakeBlobService()
    return ConfigurationLinks(lambda: service, "device-configurations", policy or LinkPolicy(),
                              now=clock or Clock(NOW)), service


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).items()}


def test_a_link_reads_one_blob_over_https_until_it_expires_and_nothing_else():
    signer, _ = links()
    link = signer.for_configuration("sensor-vib-FAC12-SN1", HASH)
    parts = urllib.parse.urlsplit(link.url)
    assert (parts.scheme, parts.netloc) == ("https", "stsensors.blob.core.windows.net")
    assert parts.path == f"/device-configurations/sensor-vib-FAC12-SN1/{HASH}.json"  # this one blob
    from azure.storage.blob import BlobClient

    assert link.url.split("?")[0] == BlobClient(  # the URL the SDK gives that blob
        "https://stsensors.blob.core.windows.net", "device-configurations", f"sensor-vib-FAC12-SN1/{HASH}.json").url
    sas = query_of(link.url)
    assert sas["sp"] == "r"  # read only: no write, delete, list, add, create, tag
    assert sas["sr"] == "b"  # a blob, not the container
    assert sas["spr"] == "https"
    assert sas["se"] == "2026-03-02T10:00:00Z" == link.expires_at  # CONFIGURATION_LINK_SECONDS (24 h) ahead
    assert sas["st"] == "2026-03-01T09:55:00Z"  # five minutes back, for clock skew
    # signed with the user delegation key (skoid ... skv), not an account key
    assert sas["skoid"] == "00000000-0000-0000-0000-0000000000a1" and sas["sks"] == "b" and sas["sig"]
    assert "si" not in sas  # no stored access policy (user delegation SAS cannot have one)


def test_one_delegation_key_signs_links_for_days_then_a_new_one_is_requested():
    clock = Clock(NOW)
    signer, service = links(clock=clock)
    signer.sign("a.json")
    signer.sign("b.json")
    assert len(service.key_requests) == 1
    start, expiry = service.key_requests[0]
    assert start == NOW.replace(microsecond=0) - dt.timedelta(minutes=5)
    assert expiry - NOW.replace(microsecond=0) <= dt.timedelta(days=7)  # Get User Delegation Key's limit
    clock.now = NOW + dt.timedelta(days=5, hours=23)  # the key still outlives a 24 h link
    signer.sign("c.json")
    assert len(service.key_requests) == 1
    clock.now = NOW + dt.timedelta(days=6, hours=1)  # it would not: a new key, never a link past the key
    link = signer.sign("d.json")
    assert len(service.key_requests) == 2
    assert query_of(link.url)["se"] <= query_of(link.url)["ske"]


def test_a_key_refused_for_lack_of_a_role_is_a_transient_failure_and_says_which_role(caplog):
    from azure.core.exceptions import HttpResponseError

    from shared.retry import TransientError

    class Refusing(FakeBlobService):
        def get_user_delegation_key(self, start, expiry):
            error = HttpResponseError(message="AuthorizationPermissionMismatch")
            error.status_code = 403
            raise error

    signer, _ = links(Refusing())
    with caplog.at_level(logging.ERROR), pytest.raises(TransientError):
        signer.sign("a.json")
    assert "generateUserDelegationKey" in caplog.text


def test_a_link_is_a_credential_its_repr_and_the_redacted_url_carry_no_sas():
    signer, _ = links()
    link = signer.sign("dev/h.json")
    assert "sig=" in link.url
    assert "sig=" not in repr(link) and "?" not in repr(link)
    assert redact_url(link.url) == "https://stsensors.blob.core.windows.net/device-configurations/dev/h.json"
    assert redact_url("https://h/p#frag") == "https://h/p"


@pytest.mark.parametrize(("environ", "problem"), [
    ({"CONFIGURATION_LINK_SECONDS": str(8 * 86400)}, "under 7 days"),
    ({"CONFIGURATION_LINK_SECONDS": "3600", "CONFIGURATION_LINK_REFRESH_SECONDS": "3600"}, "less than"),
    ({"CONFIGURATION_LINK_SECONDS": "10"}, ">= 60"),
])
def test_link_settings_are_checked(environ, problem):
    with pytest.raises(SettingError, match=problem):
        load_link_policy(Settings(environ))


def test_link_settings_default_to_a_day_renewed_six_hours_before():
    policy = load_link_policy(Settings({}))
    assert (policy.lifetime, policy.refresh_margin) == (dt.timedelta(days=1), dt.timedelta(hours=6))


# -- refresh ------------------------------------------------------------------------------------------------------
def desired(expires: str | None = "2026-03-01T12:00:00Z", config_hash: str = HASH, url: str | None = "https://x/y",
            state: str = "configured") -> dict:
    onboarding = {"state": state, "configurationHash": config_hash, "templateVersion": "1.0.0"}
    if url:
        onboarding["configurationUrl"] = url
    if expires:
        onboarding["configurationUrlExpiresAt"] = expires
    return {"telemetry": {"intervalSeconds": 60}, "onboarding": onboarding}


def test_the_refresh_query_selects_links_expiring_before_the_cutoff_or_without_an_expiry():
    text = refresh_query("2026-03-01T16:00:00Z")
    assert "properties.desired.onboarding.configurationUrlExpiresAt < '2026-03-01T16:00:00Z'" in text
    assert "NOT IS_DEFINED(properties.desired.onboarding.configurationUrlExpiresAt)" in text
    with pytest.raises(ValueError):
        refresh_query("2026' OR 1=1")


@pytest.mark.parametrize(("document", "renew"), [
    (desired("2026-03-01T12:00:00Z"), True),  # expires before the cutoff
    (desired(None), True),  # written before links were signed
    (desired("2026-03-02T12:00:00Z"), False),  # still valid past the cutoff
    (desired(url=None), False),  # the configuration is in the twin: nothing to link
    (desired(config_hash="../../other"), False),  # not a hash of ours: names no blob
    (desired(state="failed"), False),
])
def test_which_twins_get_a_new_link(document, renew):
    assert (needs_refresh(document, "2026-03-01T16:00:00Z") == HASH) is renew


class FakeHub:
    def __init__(self, twins: list[Twin], conflicts: set[str] = frozenset()):
        self.twins = twins
        self.conflicts = conflicts
        self.writes: list[tuple[str, str, dict, str | None]] = []
        self.queries: list[str] = []

    def query(self, host, text, budget=None):
        self.queries.append(text)
        return iter([t for t in self.twins if t.hub == host])

    def update_twin(self, host, device_id, patch, etag, budget=None):
        if device_id in self.conflicts:
            raise PreconditionFailed(device_id)
        self.writes.append((host, device_id, patch, etag))


def twin(device_id: str, document: dict, hub: str = "hub-a") -> Twin:
    return Twin.from_json(hub, {"deviceId": device_id, "etag": f"etag-{device_id}",
                                "properties": {"desired": document}})


def test_the_timer_renews_expiring_links_with_a_conditional_patch_that_keeps_the_configuration_hash():
    hub = FakeHub([twin("old", desired("2026-03-01T11:00:00Z")), twin("fresh", desired("2026-03-02T09:00:00Z")),
                   twin("busy", desired(None)), twin("other", desired(None), hub="hub-b")],
                  conflicts={"busy"})
    signer, _ = links()
    report = LinkRefresher(hub, ("hub-a", "hub-b"), signer, now=Clock(NOW), sleep=lambda s: None).run()
    assert (report.found, report.refreshed, report.conflicts) == (4, 2, 1)
    written = {device_id: (patch, etag) for _, device_id, patch, etag in hub.writes}
    assert set(written) == {"old", "other"}
    patch, etag = written["old"]
    assert etag == "etag-old"  # If-Match: a twin changed since the query is left to the next run
    onboarding = patch["properties"]["desired"]["onboarding"]
    assert set(onboarding) == {"configurationUrl", "configurationUrlExpiresAt"}  # hash, state, version untouched
    assert onboarding["configurationUrlExpiresAt"] == "2026-03-02T10:00:00Z"
    assert f"/old/{HASH}.json?" in onboarding["configurationUrl"]
    assert "tags" not in patch
    assert "< '2026-03-01T16:00:00Z'" in hub.queries[0]  # now + the six-hour margin


def test_without_signed_links_the_timer_does_nothing():
    hub = FakeHub([twin("old", desired(None))])
    assert LinkRefresher(hub, ("hub-a",), None).run().found == 0
    assert hub.queries == []


def test_the_plan_carries_the_link_and_its_expiry_beside_the_hash():
    from tests.unit.test_twin_plan import ESSENTIAL, config_for, fresh_twin
    from twin_setup.document import size_of
    from twin_setup.plan import plan_configuration
    from twin_setup.settings import TwinLimits

    config = config_for("sensor-temp-FAC03-SN1")
    limits = TwinLimits(desired_bytes=8192, budget_bytes=size_of(config.desired) - 1)  # the sections do not fit
    link = SignedLink("https://st.blob.core.windows.net/c/d/h.json?sp=r&sig=x", "2026-03-02T10:00:00Z")
    plan = plan_configuration(fresh_twin(), config, limits, ESSENTIAL, link.url, "2026-03-01T10:00:00Z",
                              url_expires_at=link.expires_at)
    assert plan.storage == "blob"
    onboarding = plan.patch["properties"]["desired"]["onboarding"]
    assert onboarding["configurationUrl"] == link.url
    assert onboarding["configurationUrlExpiresAt"] == "2026-03-02T10:00:00Z"
    assert onboarding["configurationHash"] == config.hash
