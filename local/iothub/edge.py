"""IoT Edge deployments and automatic configurations: applyConfigurationContent, module twins, /configurations.

applyConfigurationContent (what `az iot edge set-modules` and IoTHubConfigurationManager.
apply_configuration_on_edge_device call) writes each module's `properties.desired` from modulesContent into
that module's twin; the result is read back with GET /twins/{id}/modules/{moduleId} (for example $edgeAgent).
Configurations are stored and returned, not applied to devices (the product does not use them).
"""

from __future__ import annotations

from typing import Any

from local.iothub import twin as tw
from local.iothub.devices import new_etag
from local.iothub.errors import HubError, bad_request, module_not_found, precondition_failed
from local.iothub.events import event_time
from local.iothub.service import SYSTEM_MODULES, HubService, etag_matches, new_module


def _module_view(module: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in module.items() if k != "twin"}


def invalid_content(reason: str) -> HubError:
    return HubError(
        400,
        "InvalidConfigurationContent",
        f"The content provided for configuration is invalid. Please check and try again ({reason}).",
    )


class EdgeService:
    def __init__(self, hub: HubService):
        self.hub = hub
        self.store = hub.store

    def apply_configuration_content(self, device_id: str, content: Any) -> None:
        if not isinstance(content, dict):
            raise bad_request("The configuration content must be a JSON object.")
        modules = content.get("modulesContent")
        if not isinstance(modules, dict) or not modules:
            raise invalid_content("modulesContent is missing")
        missing = [m for m in SYSTEM_MODULES if m not in modules]
        if missing:
            raise invalid_content(f"modulesContent lacks {', '.join(missing)}")
        desired_by_module = {}
        for module_id, module_content in modules.items():
            desired = module_content.get("properties.desired") if isinstance(module_content, dict) else None
            if not isinstance(desired, dict):
                raise invalid_content(f"modulesContent.{module_id} has no 'properties.desired' object")
            label = f"modulesContent.{module_id}.properties.desired"
            desired_by_module[module_id] = tw.validate_section(desired, label, self.hub.config.twin_limits)
        now = event_time()
        with self.store.lock:
            record = self.hub.record(device_id)
            if not record["device"]["capabilities"]["iotEdge"]:
                raise bad_request(f"Device {device_id} is not an IoT Edge device; it cannot take modules content.")
            for module_id, desired in desired_by_module.items():
                module = record["modules"].get(module_id) or new_module(device_id, module_id, now, "IotEdge")
                module["twin"] = tw.apply_service_update(
                    module["twin"], None, desired, self.hub.config.twin_limits, now, replace=True
                )
                record["modules"][module_id] = module
            self.store.devices.put(device_id, record)

    def list_modules(self, device_id: str) -> list[dict[str, Any]]:
        return [_module_view(m) for m in self.hub.record(device_id)["modules"].values()]

    def _module(self, device_id: str, module_id: str) -> dict[str, Any]:
        module = self.hub.record(device_id)["modules"].get(module_id)
        if module is None:
            raise module_not_found(device_id, module_id)
        return module

    def get_module(self, device_id: str, module_id: str) -> dict[str, Any]:
        return _module_view(self._module(device_id, module_id))

    def get_module_twin(self, device_id: str, module_id: str) -> dict[str, Any]:
        module = self._module(device_id, module_id)
        return tw.module_twin_view(device_id, module_id, module, module["twin"])

    # -- configurations --------------------------------------------------------------------------------
    def get_configuration(self, config_id: str) -> dict[str, Any]:
        found = self.store.configurations.get(config_id)
        if found is None:
            raise HubError(404, "ConfigurationNotFound", f"Configuration {config_id} not found.")
        return found

    def list_configurations(self, top: int | None) -> list[dict[str, Any]]:
        with self.store.lock:
            items = list(self.store.configurations.values())
        return items[:top] if top and top > 0 else items

    def put_configuration(self, config_id: str, body: Any, if_match: str | None) -> tuple[dict[str, Any], bool]:
        """(stored configuration, created?)."""
        if not isinstance(body, dict):
            raise bad_request("The configuration must be a JSON object.")
        if not config_id or len(config_id) > 128:
            raise bad_request("Configuration id must be 1 to 128 characters.")
        if body.get("id") not in (None, config_id):
            raise bad_request("The id in the body does not match the one in the URL.")
        if not isinstance(body.get("content"), dict):
            raise bad_request("A configuration needs a content object.")
        priority = body.get("priority") or 0
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise bad_request("priority must be an integer.")
        for name in ("labels", "metrics"):
            if body.get(name) is not None and not isinstance(body[name], dict):
                raise bad_request(f"{name} must be a JSON object.")
        now = event_time()
        with self.store.lock:
            existing = self.store.configurations.get(config_id)
            if existing is not None and if_match is None:
                raise HubError(409, "ConfigurationAlreadyExists", f"Configuration {config_id} already exists.")
            if existing is not None and not etag_matches(if_match, existing["etag"]):
                raise precondition_failed("configuration")
            stored = {
                "id": config_id,
                "schemaVersion": body.get("schemaVersion") or "1.0",
                "labels": body.get("labels") or {},
                "content": body["content"],
                "targetCondition": body.get("targetCondition") or "",
                "createdTimeUtc": existing["createdTimeUtc"] if existing else now,
                "lastUpdatedTimeUtc": now,
                "priority": priority,
                "systemMetrics": {"results": {}, "queries": {}},
                "metrics": body.get("metrics") or {"results": {}, "queries": {}},
                "etag": new_etag(),
            }
            self.store.configurations.put(config_id, stored)
        return stored, existing is None

    def delete_configuration(self, config_id: str, if_match: str | None) -> None:
        with self.store.lock:
            existing = self.get_configuration(config_id)
            if not etag_matches(if_match, existing["etag"]):
                raise precondition_failed("configuration")
            self.store.configurations.delete(config_id)
