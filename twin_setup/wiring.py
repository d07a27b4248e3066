"""Builds the twin setup collaborators once per process from the shared Services (composition root)."""

from __future__ import annotations

from functools import cache

from shared.audit import AuditWriter
from shared.bootstrap import Services, services
from shared.iothub import HubResolver, IotHub
from twin_setup import settings as twin_settings
from twin_setup.overrides import OverrideStore
from twin_setup.records import ConfigurationStore
from twin_setup.service import TwinSetup
from twin_setup.templates import TemplateStore


def build_twin_setup(svc: Services) -> TwinSetup:
    cfg = twin_settings.load(svc.settings)
    templates_container = cache(lambda: svc.blob_service.get_container_client(cfg.templates_container))
    configurations_container = cache(lambda: svc.blob_service.get_container_client(cfg.configurations_container))
    return TwinSetup(
        settings=cfg,
        resolver=HubResolver(cfg.hub_hosts, cfg.hub_names),
        # Every call runs within the event's budget (cfg.retry), so the adapter's own policy is not used.
        hub=IotHub(svc.registries, cfg.retry, cfg.hub_timeout_s),
        templates=TemplateStore(templates_container, cfg.limits, cfg.template_ttl_s, cfg.template_max_bytes),
        overrides=OverrideStore(svc.database, cfg.overrides_ttl_s),
        configurations=ConfigurationStore(configurations_container),
        audit=AuditWriter(svc.database),
    )


@cache
def twin_setup() -> TwinSetup:
    return build_twin_setup(services())
