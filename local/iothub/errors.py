"""IoT Hub's error answers: status, error code and the JSON body the service SDKs parse.

IoT Hub answers errors with `{"Message": "ErrorCode:<Code>;<text>", "ExceptionMessage": "Tracking ID:..."}`
and an `iothub-errorcode` header (the C# SDK reads both; azure-iot-hub surfaces status and body). Codes are
the names of Microsoft.Azure.Devices.Common.Exceptions.ErrorCode, plus the few seen only in service answers
(DeviceModelMaxPropertiesExceeded for oversized twins, InvalidConfigurationContent).
"""

from __future__ import annotations

import datetime as dt
import uuid


class HubError(Exception):
    """A request the hub refuses; carries what the HTTP answer needs."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_body(code: str, message: str) -> dict[str, str]:
    now = dt.datetime.now(dt.UTC)
    tracking = f"Tracking ID:{uuid.uuid4().hex}-G:0-TimeStamp:{now:%m/%d/%Y %H:%M:%S}"
    return {"Message": f"ErrorCode:{code};{message}", "ExceptionMessage": tracking}


def bad_request(message: str, code: str = "ArgumentInvalid") -> HubError:
    return HubError(400, code, message)


def device_not_found(device_id: str) -> HubError:
    return HubError(404, "DeviceNotFound", f"Device {device_id} not found on this hub.")


def module_not_found(device_id: str, module_id: str) -> HubError:
    return HubError(404, "ModuleNotFound", f"Module {module_id} not found on device {device_id}.")


def precondition_failed(what: str) -> HubError:
    return HubError(412, "PreconditionFailed", f"Precondition failed: the ETag does not match the {what}'s.")


def unauthorized(reason: str) -> HubError:
    return HubError(401, "IotHubUnauthorizedAccess", f"Unauthorized: {reason}")


def throttled(operation: str, retry_after_s: int) -> HubError:
    return HubError(
        429,
        "ThrottlingException",
        f"The request has been throttled. Wait {retry_after_s} seconds and try again. Operation type: {operation}",
        {"Retry-After": str(retry_after_s)},
    )
