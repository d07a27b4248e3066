"""The one IoT Hub adapter (docs/architecture.md "IoT Hub adapter"): clients, twin model, errors, gateway.

Importing this package does not import the azure-iot-hub SDK; the gateway and clients import it on first call.
"""

from shared.iothub.clients import HubResolver, RegistryClients, registry_manager, tuned
from shared.iothub.errors import (
    DeviceGone,
    HubAccessDenied,
    HubRefused,
    HubUnavailable,
    PreconditionFailed,
    UnknownHub,
    translate,
)
from shared.iothub.gateway import HubCallStats, IotHub
from shared.iothub.twin import Twin, twin_patch, without_system_keys

__all__ = [
    "DeviceGone", "HubAccessDenied", "HubCallStats", "HubRefused", "HubResolver", "HubUnavailable", "IotHub",
    "PreconditionFailed", "RegistryClients", "Twin", "UnknownHub", "registry_manager", "translate", "tuned",
    "twin_patch", "without_system_keys",
]
