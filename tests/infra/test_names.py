"""Queues, containers, functions, routes and CA names the code uses match the Bicep and the deploy script.

Function names come from the app itself (function_app.app indexed as the worker indexes it). The functions the
feature issues promise are checked when they exist and reported as expected failures (xfail) until they land;
a function, queue or route the code has and the infrastructure lacks fails.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest

from local.host.ncrontab import next_occurrence
from local.seed import data as seed
from tests.infra.bicep import INFRA, load
from tests.infra.code_scan import REPO, functions, imported_blueprint_packages, string_literals
from tests.infra.test_bicep import body

DEPLOY = (INFRA / "deploy.sh").read_text()
MAIN = load("main.bicep")

# What the feature issues promise (name -> trigger type, HTTP route, auth level).
EXPECTED = {
    "health": ("httpTrigger", "health", "anonymous"),
    "health_details": ("httpTrigger", "health/details", "function"),
    "allocate": ("httpTrigger", "allocate", "function"),
    "on_device_created": ("eventGridTrigger", None, None),
    "sign_csr": ("httpTrigger", "certificates/sign", "function"),
    "revoke_certificate": ("httpTrigger", "certificates/revoke", "admin"),
    "sign_csr_batch": ("httpTrigger", "certificates/batch", "function"),
    "certificate_lot": ("httpTrigger", "certificates/lots/{lot}", "function"),
    "partner_api_openapi": ("httpTrigger", "partner-api/openapi.json", "anonymous"),
    "refresh_crls": ("timerTrigger", None, None),
    "scan_expiring_certificates": ("timerTrigger", None, None),
    "process_renewal": ("queueTrigger", None, None),
}


def bicep_queues() -> set[str]:
    return set(MAIN.string_list("queueNames"))


def bicep_containers() -> set[str]:
    storage = body(MAIN.modules["storage"])["params"]["containerNames"]
    return {MAIN.resolve(name) for name in storage}


def function_or_xfail(name: str):
    spec = functions().get(name)
    if spec is None:
        pytest.xfail(f"function {name} is not in the code yet (expected from its feature issue)")
    return spec


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_expected_function_has_its_trigger_route_and_auth(name):
    spec = function_or_xfail(name)
    trigger, route, auth = EXPECTED[name]
    assert spec.trigger_type == trigger
    if route:
        assert (spec.route, spec.auth_level) == (route, auth)


# Anonymous on purpose: the platform's probes (health answers the status only), and the partner API's static OpenAPI
# document (docs/partners.md "The OpenAPI document": no deployment detail in it).
ANONYMOUS = {"health", "partner_api_openapi"}


def test_every_http_function_except_health_needs_a_key():
    for name, spec in functions().items():
        if spec.is_http and name not in ANONYMOUS:
            assert spec.auth_level in ("function", "admin"), f"{name} is anonymous"


def test_every_queue_trigger_reads_a_queue_the_bicep_creates():
    for name, spec in functions().items():
        if spec.trigger_type == "queueTrigger":
            queue = spec.trigger["queueName"]
            assert queue in bicep_queues(), f"{name} reads queue {queue}, not created in infra/main.bicep"
            assert f"{queue}-poison" in bicep_queues(), f"{name}: {queue}-poison is sent to by the code"


def test_every_event_grid_function_is_subscribed():
    # DeviceCreated from every hub (device-events.bicep), BlobCreated of the templates container
    # (templates-events.bicep: its functionName parameter keeps its default, which main.bicep does not override)
    assert "functionName" not in body(MAIN.modules["templateEvents"])["params"]
    subscribed = {body(MAIN.modules["deviceEvents"])["params"]["functionName"],
                  load("modules/templates-events.bicep").parameters["functionName"]["default"]}
    grid = [name for name, spec in functions().items() if spec.trigger_type == "eventGridTrigger"]
    for name in grid:
        assert name in subscribed, f"Event Grid function {name} has no subscription in infra/main.bicep"
    if not grid:
        pytest.xfail("no Event Grid function in the code yet (on_device_created comes with twin setup)")


def test_seeded_queues_and_containers_exist_in_azure():
    assert set(seed.QUEUES) <= bicep_queues()
    assert set(seed.CONTAINERS) <= bicep_containers()


def test_queue_and_container_names_in_the_code_exist_in_azure():
    literals = string_literals().names
    assert {q for q in literals if q in {"certificate-renewals", "certificate-alerts", "security-alerts"}} \
        <= bicep_queues()
    app = load("app/functions.bicep")
    settings = app.resolve("productSettings")
    main_params = body(MAIN.modules["functionApp"])["params"]
    assert MAIN.resolve(main_params["templatesContainer"]) in bicep_containers()
    assert MAIN.resolve(main_params["configurationsContainer"]) in bicep_containers()
    assert main_params["securityAlertsQueue"] in bicep_queues()
    assert settings["TEMPLATES_CONTAINER"] == "templatesContainer"


def test_regions_and_ca_names_follow_the_seed_convention():
    regions = [r["name"] for r in MAIN.parameters["regions"]["default"]]
    assert regions == list(seed.REGIONS)
    ca_names = MAIN.variables["caNames"]["value"]["config"]
    assert ca_names == "intermediate-ca-${region.name}"
    assert all(name == f"intermediate-ca-{region}" for region, name in seed.CA_NAMES.items())
    assert 'ca="intermediate-ca-$1"' in DEPLOY
    assert '--name "intermediate-ca-${region}.crl"' in DEPLOY  # the CRL blob shared/crl.py names: {ca}.crl


def test_the_crl_container_the_code_defaults_to_is_created_and_named_in_the_app_settings():
    from local.settings_file import CRL_CONTAINER
    from shared.config import Settings

    main_params = body(MAIN.modules["functionApp"])["params"]
    container = MAIN.resolve(main_params["crlContainer"])
    assert container == Settings({}).crl_container == CRL_CONTAINER == "crl"
    assert container in bicep_containers()
    app = load("app/functions.bicep")
    settings = app.resolve("productSettings")
    assert settings["CRL_CONTAINER"] == "crlContainer" and "CRL_DISTRIBUTION_URL" in settings
    assert "CRL_SECRET_PREFIX" not in settings and "CRL_MAX_SECRET_CHARS" not in settings
    assert 'CRL_CONTAINER:-crl' in DEPLOY


def test_deploy_script_uses_the_functions_it_names():
    allocate = function_or_xfail("allocate")
    assert f"/api/{allocate.route}?code=" in DEPLOY and "--function-name allocate" in DEPLOY
    health = function_or_xfail("health")
    assert f"/api/{health.route}" in DEPLOY
    grid = function_or_xfail("on_device_created")
    assert f"has_function {grid.name}" in DEPLOY
    crls = function_or_xfail("refresh_crls")
    assert f"/admin/functions/{crls.name}" in DEPLOY


def test_crl_alert_matches_the_refresh_timer():
    spec = function_or_xfail("refresh_crls")
    start = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    first = next_occurrence(spec.trigger["schedule"], start)
    period = next_occurrence(spec.trigger["schedule"], first) - first
    alerts = load("modules/alerts.bicep")
    assert alerts.parameters["crlTimerHours"]["default"] * 3600 == period.total_seconds()


def test_package_holds_the_app_and_nothing_local():
    match = re.search(r"readonly PACKAGE_PATHS=\(([^)]*)\)", DEPLOY)
    paths = set(match.group(1).split())
    assert {"function_app.py", "host.json", "requirements.txt", "shared"} <= paths
    assert imported_blueprint_packages() <= paths
    assert not paths & {"local", "tests", "bench", ".local", "infra", "node_modules", "local.settings.json"}
    assert all((REPO / p).exists() for p in paths)


def test_dps_webhook_api_version_is_the_one_the_contract_fixtures_use():
    version = re.search(r'DPS_WEBHOOK_API_VERSION="([^"]+)"', DEPLOY).group(1)
    fixtures = (REPO / "tests" / "contract" / "dps")
    texts = " ".join(p.read_text() for p in fixtures.rglob("*.json")) if fixtures.exists() else ""
    assert version in texts or not texts, f"enrollment groups ask DPS for api-version {version}"
