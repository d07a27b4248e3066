"""Builds the twin setup collaborators once per process from the shared Services (composition root)."""

from __future__ import annotations

from functools import cache

from shared import iothub
from shared.bootstrap import Services, services
from twin_setup import settings as twin_settings
from twin_setup.hub import HubGateway, HubResolver, RegistryClients
from twin_setup.overrides import OverrideStore
from twin_setup.records import ConfigurationStore, FailureAudit
from twin_setup.service import TwinSetup
from twin_setup.templates import TemplateStore


def build_twin_setup(svc: Services) -> TwinSetup:
    cfg = twin_settings.load(svc.settings)
    templates_container = cache(lambda: svc.blob_service.get_container_client(cfg.templates_container))
    configurations_container = cache(lambda: svc.blob_service.get_container_client(cfg.configurations_container))
    registries = RegistryClients(lambda host: iothub.registry_manager(svc.settings, host, lambda: svc.credential))
    return TwinSetup(
        settings=cfg,
        resolver=HubResolver(cfg.hub_hosts, cfg.hub_names),
        hub=HubGateway(registries, cfg.hub_timeout_s),
        templates=TemplateStore(templates_container, cfg.limits, cfg.template_ttl_s, cfg.template_max_bytes),
        overrides=OverrideStore(svc.database, cfg.overrides_ttl_s),
        configurations=ConfigurationStore(configurations_container),
        audit=FailureAudit(svc.database),
    )


@cache
def twin_setup() -> TwinSetup:
    return build_twin_setup(services())
