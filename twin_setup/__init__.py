"""Twin setup: IoT Hub DeviceCreated (Event Grid) -> Blob template + SQL facility overrides -> twin desired
properties, and the edge deployment for gateways. Function: on_device_created."""

from twin_setup.functions import bp

__all__ = ["bp"]
