"""IoT Hub service clients: one IoTHubRegistryManager per hub and process, by connection string or by the app's
identity, tuned once for every feature.

Hubs deployed with local auth disabled only accept Entra tokens, hence from_token_credential.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from shared.config import Settings
from shared.iothub.errors import UnknownHub


def registry_manager(settings: Settings, host_name: str, credential_factory):
    """A new, untuned IoTHubRegistryManager for host_name (use RegistryClients for the process's own)."""
    from azure.iot.hub import IoTHubRegistryManager

    connection_string = settings.iot_hub_connection_string(host_name)
    if connection_string:
        return IoTHubRegistryManager.from_connection_string(connection_string)
    return IoTHubRegistryManager.from_token_credential(host_name, credential_factory())


def tuned(manager: Any) -> Any:
    """Two changes to an IoTHubRegistryManager's msrest client:
    - keep-alive: msrest closes its session after every call unless config.keep_alive is set, so each call
      paid a new TCP + TLS handshake (about 20 ms of the 22 ms a twin read takes against the local emulator);
    - no status retries in urllib3: msrest has it retry GETs on 5xx and sleep out any Retry-After on 429/503,
      however long; a 60 s Retry-After would hold a webhook or an Event Grid delivery past its deadline.
      429/5xx are left to the one retry policy (shared/retry.py); connection retries stay with urllib3."""
    from urllib3 import Retry

    retry = Retry(total=3, connect=3, read=0, status=0, other=0, backoff_factor=0.2, status_forcelist=(),
                  respect_retry_after_header=False, raise_on_status=False)
    retry.backoff_max = 2  # urllib3 2.x
    retry.BACKOFF_MAX = 2  # urllib3 1.x name, which msrest also logs when it builds a session
    manager.protocol.config.retry_policy.policy = retry
    manager.protocol.config.keep_alive = True
    _one_session(manager)
    return manager


POOL_SIZE = 32  # connections kept per hub: the worker's threads plus a timer run's


def _one_session(manager: Any) -> None:
    """One requests session (one pool of keep-alive connections) per hub for every thread. msrest keeps a session
    per thread, so each new thread (every funnel run has its own workers) opened a new TLS connection to every hub
    and left the old ones to the garbage collector: connections and memory grew with threads x hubs. A requests
    session is shared across threads as azure-core's transport shares one; urllib3's pool is thread-safe."""
    import types

    import requests

    driver = getattr(getattr(getattr(manager.protocol.config, "pipeline", None), "_sender", None), "driver", None)
    if driver is None or not hasattr(driver, "_session_mapping"):
        return  # another msrest layout: keep its own sessions
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=POOL_SIZE)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    driver._session_mapping = types.SimpleNamespace()
    driver.session = session  # msrest's setter applies its retry policy to the adapters


class RegistryClients:
    """The tuned IoTHubRegistryManager of each hub, created on first use and shared by every feature."""

    def __init__(self, factory: Callable[[str], Any]):
        self._factory = factory
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __call__(self, host: str) -> Any:
        with self._lock:
            client = self._clients.get(host)
            if client is None:
                client = self._clients[host] = tuned(self._factory(host))
            return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.protocol.close()
            self._clients.clear()


class HubResolver:
    """Event Grid names a hub by its name ("contoso-west"); calls need its host name. Resolution order: the
    explicit IOT_HUB_NAMES mapping, then the configured host whose first DNS label is the name
    (contoso-west.azure-devices.net)."""

    def __init__(self, hosts: tuple[str, ...], explicit: tuple[tuple[str, str], ...] = ()):
        self._hosts = hosts
        self._explicit = {name.lower(): host for name, host in explicit}

    def resolve(self, hub_name: str) -> str:
        host = self._explicit.get(hub_name.lower())
        if host is None:
            host = next((h for h in self._hosts if h.split(".", 1)[0].lower() == hub_name.lower()), None)
        if host is None:
            raise UnknownHub(f"hub {hub_name[:80]!r} is not configured (IOT_HUB_NAMES / IOT_HUB_HOSTNAMES)")
        return host
