"""How the CLI reports a failure: one line with an error-catalogue code, and an exit status.

`onboarding: error <code>: <message>` on stderr, where code is the product's own (shared/errors.py), so a script
can branch on it as on the HTTP API's codes. Exit status 2 for refusals and bad input (the 4xx codes; argparse's
usage errors are 2 as well), 1 for faults (5xx codes: configuration_error, dependency_unavailable,
internal_error, ...). Tracebacks only with --debug.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from shared.config import SettingError
from shared.errors import OnboardingError

MESSAGE_LIMIT = 300
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-f]+>:?\s*")


@dataclass(frozen=True)
class Failure:
    code: str
    message: str
    exit_status: int

    def line(self) -> str:
        return f"onboarding: error {self.code}: {self.message}"


def _one_line(text: str) -> str:
    text = _OBJECT_REPR.sub("", " ".join(str(text).split()))
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)


def _is_dependency_failure(exc: BaseException) -> bool:
    """A backing service did not answer: connection refused or reset, timeouts, TLS, a missing token, 5xx/429.

    Types are looked up by module so that the SDKs need not be importable; the product's own transient errors
    (shared.retry.TransientError and its subclasses, such as the IoT Hub adapter's HubUnavailable) by class name,
    since those modules are still moving.
    """
    names = {f"{c.__module__}.{c.__name__}" for c in type(exc).__mro__}
    if any(n.endswith(".TransientError") for n in names):
        return True
    if {"azure.core.exceptions.ServiceRequestError", "azure.core.exceptions.ServiceResponseError",
            "azure.core.exceptions.ClientAuthenticationError", "msrest.exceptions.ClientRequestError",
            "pyodbc.Error", "builtins.OSError"} & names:
        return True
    status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
    return "azure.core.exceptions.HttpResponseError" in names and isinstance(status, int) and (
        status >= 500 or status == 429)


def classify(exc: BaseException) -> Failure:
    """The code, message and exit status for an exception that ended a command."""
    if isinstance(exc, OnboardingError):
        return Failure(exc.code, _one_line(exc.detail or exc.error.message), 2 if exc.status < 500 else 1)
    if isinstance(exc, SettingError):
        return Failure("configuration_error", _one_line(str(exc)), 1)
    causes = list(_chain(exc))
    failed = next((e for e in causes if _is_dependency_failure(e)), None)
    if failed is not None:
        root = causes[-1]
        message = f"{type(exc).__name__}: {exc}"
        if root is not exc:
            message += f" ({type(root).__name__}: {root})"
        return Failure("dependency_unavailable", _one_line(message), 1)
    return Failure("internal_error", _one_line(f"{type(exc).__name__}: {exc}"), 1)
