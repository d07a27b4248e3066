"""The partner API's OpenAPI document (cert_lifecycle/partner_api.openapi.json): valid OpenAPI 3 by the validator
from PyPI (openapi-spec-validator), and equal to the routes: every partner route the app registers (derived from
function_app.app, cert_lifecycle/openapi.py partner_routes) appears with its method, operationId and security, and
nothing else; every error code it names is a catalogue code with that status; the app serves the same bytes."""

from __future__ import annotations

import json

import azure.functions as func
import pytest
from openapi_spec_validator import validate

from cert_lifecycle import functions
from cert_lifecycle.openapi import DOCUMENT, document
from shared.errors import CATALOGUE
from tests.infra.code_scan import functions as app_functions

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def partner_routes() -> dict[tuple[str, str], str]:
    """(METHOD, /route) -> function name of every partner route function_app.app registers (indexed as the host
    indexes it): the HTTP functions of the certificate lifecycle below the admin level (cert_lifecycle/openapi.py)."""
    found = {}
    for name, spec in app_functions().items():
        trigger = spec.trigger
        if spec.trigger_type != "httpTrigger" or not spec.user_function.__module__.startswith("cert_lifecycle."):
            continue
        if trigger.get("authLevel") == "admin":
            continue
        for method in trigger.get("methods") or ():
            found[(method.upper(), "/" + spec.route.strip("/"))] = name
    return found


def auth_levels() -> dict[str, str]:
    return {name: spec.trigger.get("authLevel") for name, spec in app_functions().items()}


def operations(doc: dict) -> dict[tuple[str, str], dict]:
    return {(method.upper(), path): operation for path, item in doc["paths"].items()
            for method, operation in item.items() if method in METHODS}


def documented_codes(operation: dict) -> dict[str, list[str]]:
    """status -> the error codes its response lists (the enum on error.code)."""
    found = {}
    for status, response in operation["responses"].items():
        schema = response.get("content", {}).get("application/json", {}).get("schema", {})
        for part in schema.get("allOf", []):
            code = part.get("properties", {}).get("error", {}).get("properties", {}).get("code", {})
            if "enum" in code:
                found[status] = code["enum"]
    return found


def test_the_document_is_valid_openapi_3():
    doc = json.loads(DOCUMENT.read_text())
    validate(doc)
    assert doc["openapi"].startswith("3.")


def test_the_document_has_exactly_the_partner_routes_the_app_registers():
    routes = partner_routes()
    assert set(operations(document())) == set(routes)
    for key, operation in operations(document()).items():
        assert operation["operationId"] == routes[key], key
    # the rule picks the partner routes, not the operator's or another feature's
    assert ("POST", "/certificates/sign") in routes and ("POST", "/certificates/revoke") not in routes
    assert not any(route.startswith(("/health", "/allocate")) for _, route in routes)


def test_security_matches_each_functions_auth_level():
    levels = auth_levels()
    schemes = document()["components"]["securitySchemes"]
    assert (schemes["functionKeyHeader"]["in"], schemes["functionKeyHeader"]["name"]) == ("header", "x-functions-key")
    assert (schemes["functionKeyQuery"]["in"], schemes["functionKeyQuery"]["name"]) == ("query", "code")
    assert (schemes["partnerToken"]["type"], schemes["partnerToken"]["scheme"]) == ("http", "bearer")
    for (_, path), operation in operations(document()).items():
        level = levels[operation["operationId"]]
        if level == "anonymous":
            assert operation["security"] == [], path
        else:
            assert level == "function", path
            # a function key (header or query) AND the partner token, on every alternative
            assert {frozenset(alternative) for alternative in operation["security"]} == {
                frozenset({"functionKeyHeader", "partnerToken"}), frozenset({"functionKeyQuery", "partnerToken"})}


def test_every_error_code_is_a_catalogue_code_under_its_own_status_with_the_shared_body():
    for key, operation in operations(document()).items():
        for status, codes in documented_codes(operation).items():
            assert codes, key
            for code in codes:
                assert code in CATALOGUE, (key, code)
                assert str(CATALOGUE[code].status) == status, (key, code, status)
        for status, response in operation["responses"].items():
            if status != "200":
                assert status in documented_codes(operation), (key, status)
                parts = response["content"]["application/json"]["schema"]["allOf"]
                assert {"$ref": "#/components/schemas/ErrorBody"} in parts
    error = document()["components"]["schemas"]["ErrorBody"]["properties"]["error"]
    assert set(error["properties"]) == {"code", "message", "detail"} and error["required"] == ["code", "message"]
    item = document()["components"]["schemas"]["BatchItemRefused"]["allOf"]
    item_codes = item[2]["properties"]["error"]["properties"]["code"]["enum"]
    assert set(item_codes) <= set(CATALOGUE) and "not_attempted" in item_codes and "certificate_exists" in item_codes
    assert sorted({CATALOGUE[c].status for c in item_codes}) == item[0]["properties"]["status"]["enum"]


@pytest.mark.parametrize("code,operation", [
    ("partner_credential_required", "sign_csr"), ("partner_quota_exceeded", "sign_csr"),
    ("certificate_exists", "sign_csr"), ("serial_not_allowed", "sign_csr"), ("weak_key", "sign_csr"),
    ("batch_too_large", "sign_csr_batch"), ("invalid_lot", "sign_csr_batch"),
    ("lot_not_found", "certificate_lot"), ("partner_not_authorized", "certificate_lot"),
])
def test_the_partner_refusals_are_documented(code, operation):
    found = {op["operationId"]: op for op in operations(document()).values()}[operation]
    assert code in documented_codes(found)[str(CATALOGUE[code].status)]


def test_the_app_serves_the_document_anonymously():
    response = functions.partner_api_openapi.build().get_user_function()(
        func.HttpRequest("GET", "/api/partner-api/openapi.json", body=b"", headers={}))
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_body() == DOCUMENT.read_bytes()
