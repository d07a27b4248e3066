"""cli.errors.classify: the catalogue code and exit status for what ends a command."""

from __future__ import annotations

import pyodbc
import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)

from cli.errors import MESSAGE_LIMIT, classify
from shared.config import SettingError
from shared.errors import OnboardingError


class TransientError(Exception):
    """Like shared.retry.TransientError: the product's transient failures are matched by class name."""


class HubUnavailable(TransientError):
    pass


def chained(outer: Exception, cause: Exception) -> Exception:
    try:
        raise outer from cause
    except Exception as exc:
        return exc


@pytest.mark.parametrize(("exc", "code", "status"), [
    (OnboardingError("unknown_facility"), "unknown_facility", 2),
    (OnboardingError("crl_unavailable", "CRL past nextUpdate"), "crl_unavailable", 1),  # 503: may succeed later
    (OnboardingError("dependency_unavailable"), "dependency_unavailable", 1),
    (OnboardingError("configuration_error", "REGIONAL_CAS has no CA for region west"), "configuration_error", 1),
    (SettingError("app setting KEY_VAULT_URL is not set"), "configuration_error", 1),
    (ServiceRequestError("Connection refused"), "dependency_unavailable", 1),
    (ClientAuthenticationError("no token"), "dependency_unavailable", 1),
    (HttpResponseError(message="busy", response=None), "internal_error", 1),
    (ResourceNotFoundError("no such secret"), "internal_error", 1),
    (pyodbc.OperationalError("unable to open database file"), "dependency_unavailable", 1),
    (ConnectionRefusedError(111, "Connection refused"), "dependency_unavailable", 1),
    (HubUnavailable("device count on localhost:8441: HTTP 503"), "dependency_unavailable", 1),
    (chained(RuntimeError("template x: ServiceRequestError"), ServiceRequestError("refused")),
     "dependency_unavailable", 1),
    (KeyError("x"), "internal_error", 1),
])
def test_codes_and_exit_statuses(exc, code, status):
    failure = classify(exc)
    assert (failure.code, failure.exit_status) == (code, status)
    assert failure.line().startswith(f"onboarding: error {code}: ")


def test_a_service_error_with_a_5xx_or_429_status_is_a_dependency_failure():
    error = HttpResponseError(message="throttled")
    error.status_code = 429
    assert classify(error).code == "dependency_unavailable"
    error.status_code = 403
    assert classify(error).code == "internal_error"


def test_the_message_is_one_bounded_line_without_object_addresses():
    failure = classify(ServiceRequestError("<urllib3.connection.HTTPSConnection object at 0x7f3a2c>: Failed\n"
                                           "to establish a new connection " + "x" * 500))
    assert "\n" not in failure.message and "0x7f" not in failure.message
    assert failure.message.startswith("ServiceRequestError: Failed to establish")
    assert len(failure.message) == MESSAGE_LIMIT


def test_an_onboarding_error_without_detail_carries_the_catalogue_message():
    assert classify(OnboardingError("no_hub_capacity")).message == "No linked IoT hub can take the device."
