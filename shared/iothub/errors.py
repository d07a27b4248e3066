"""The IoT Hub adapter's exception vocabulary, and the translation of azure-iot-hub (msrest) errors into it.

- 404 -> DeviceGone (deleted before or while we worked: nothing may resurrect it);
- 412 -> PreconditionFailed (someone wrote the twin or identity since we read it: re-read and decide again);
- 408, 429, 5xx, timeouts, refused connections -> HubUnavailable, a TransientError carrying the hub's
  Retry-After (both forms), which the retry policy (shared/retry.py) retries within its budget;
- 401 / 403 other than a size refusal -> HubAccessDenied (credentials or rights are wrong: the caller fails so
  the platform retries once it is fixed; never recorded against a device);
- other 4xx (400 ArgumentInvalid, 403 DeviceModelMaxPropertiesExceeded, InvalidConfigurationContent) ->
  HubRefused, a permanent refusal of that one request.
IoT Hub error bodies: {"Message": "ErrorCode:<code>;<text>", ...} and the `iothub-errorcode` header
(docs/contracts.md 3).
"""

from __future__ import annotations

from shared.retry import TransientError, parse_retry_after

TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class HubUnavailable(TransientError):
    """The hub throttled (429), was unavailable (5xx), timed out or could not be reached."""


class DeviceGone(Exception):
    """The device does not exist on the hub (any more)."""


class PreconditionFailed(Exception):
    """412: the twin's or identity's etag changed since it was read."""


class HubAccessDenied(Exception):
    """The hub refused our credentials or rights (401/403)."""


class HubRefused(Exception):
    """A permanent refusal of one request (4xx other than 404/408/412/429)."""

    def __init__(self, status: int, error_code: str, message: str):
        super().__init__(f"{status} {error_code}: {message}")
        self.status = status
        self.error_code = error_code
        self.message = message


class UnknownHub(Exception):
    """An event or a message names a hub that is not configured."""


def _error_code(response) -> str:
    code = response.headers.get("iothub-errorcode") if response is not None else None
    if code:
        return code
    try:
        message = response.json().get("Message", "")
    except Exception:  # noqa: BLE001 - an error body that is not JSON still has a status
        return ""
    return message.split(";", 1)[0].removeprefix("ErrorCode:") if message.startswith("ErrorCode:") else ""


def _message(response) -> str:
    try:
        body = response.json()
    except Exception:  # noqa: BLE001
        return (response.text or "")[:200]
    message = body.get("Message", "") if isinstance(body, dict) else ""
    return message.split(";", 1)[-1][:200]


def translate(exc: Exception, what: str) -> Exception:
    """The exception callers see for an SDK exception (returned, for the caller to raise)."""
    from msrest.exceptions import AuthenticationError, ClientRequestError, HttpOperationError

    if isinstance(exc, HttpOperationError):
        response = exc.response
        status = response.status_code if response is not None else 0
        code = _error_code(response)
        if status == 404:
            return DeviceGone(f"{what}: {code or 'not found'}")
        if status == 412:
            return PreconditionFailed(what)
        if status in TRANSIENT_STATUSES:
            retry_after = parse_retry_after(response.headers.get("Retry-After")) if response is not None else None
            return HubUnavailable(f"{what}: HTTP {status} {code}".strip(), retry_after)
        if status in (401, 403) and code != "DeviceModelMaxPropertiesExceeded":
            return HubAccessDenied(f"{what}: HTTP {status} {code}".strip())
        return HubRefused(status, code, _message(response))
    if isinstance(exc, AuthenticationError):
        return HubAccessDenied(f"{what}: {type(exc).__name__}")
    if isinstance(exc, ClientRequestError):  # timeouts, refused connections, urllib3 retries exhausted
        return HubUnavailable(f"{what}: {type(exc).__name__} ({str(exc)[:120]})")
    return exc
