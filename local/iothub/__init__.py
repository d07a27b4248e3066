"""Local IoT Hub emulator: the service REST API that azure-iot-hub calls, and the device side (devices
authenticated by their client certificates), served over TLS, one app per hub.

Modules: config (HubConfig), app (create_app), routes (REST surface), service / edge (operations),
twin / devices (pure document rules), query (query language), auth (SAS and bearer tokens),
device_auth (who may act as a device),
ratelimit (S1 throttles), events (Event Grid delivery), store (durable state), http, errors.
"""

from local.iothub.app import create_app
from local.iothub.config import HubConfig, RateLimits, TwinLimits, connection_string, local_hub_config

__all__ = ["HubConfig", "RateLimits", "TwinLimits", "connection_string", "create_app", "local_hub_config"]
