"""Builds the twin setup collaborators once per process from the shared Services (composition root)."""

from __future__ import annotations

from functools import cache

from shared.audit import AuditWriter
from shared.bootstrap import Services, services
from shared.iothub import HubResolver, IotHub
from twin_setup import settings as twin_settings
from twin_setup.offload import ConfigurationLinks, LinkRefresher, load_link_policy
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
        links=configuration_links(svc, cfg.configurations_container),
    )


def configuration_links(svc: Services, container: str) -> ConfigurationLinks | None:
    """Read-only links to offloaded configurations, signed with a user delegation key (twin_setup/offload.py).
    None over plain HTTP: only an Azurite started without TLS (tests and benches on their own ports), which cannot
    issue user delegation keys; twin setup then writes the bare blob URL, which grants nothing."""
    if not svc.settings.blob_endpoint.startswith("https://"):
        return None
    return ConfigurationLinks(lambda: svc.token_blob_service, container, load_link_policy(svc.settings))


def build_link_refresher(svc: Services, setup: TwinSetup) -> LinkRefresher:
    return LinkRefresher(IotHub(svc.registries, setup.settings.retry, setup.settings.hub_timeout_s),
                         setup.settings.hub_hosts, setup.links)


@cache
def link_refresher() -> LinkRefresher:
    return build_link_refresher(services(), twin_setup())


@cache
def twin_setup() -> TwinSetup:
    return build_twin_setup(services())


def queue_sender(svc: Services, name: str):
    """(message, delay seconds) -> the config-rollouts queue (base64, as the queue trigger reads it), creating the
    queue the first time it is missing."""
    import json as _json

    client = svc.queue(name)

    def send(message: dict, delay_s: float) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        text = _json.dumps(message)
        delay = max(0, min(round(delay_s), 7 * 24 * 3600))
        try:
            client.send_message(text, visibility_timeout=delay or None)
        except ResourceNotFoundError:
            client.create_queue()
            client.send_message(text, visibility_timeout=delay or None)

    return send


def build_changes(svc: Services, setup: TwinSetup | None = None):
    from twin_setup.changes import Changes, InstalledFleet
    from twin_setup.rollouts import RolloutStore

    setup = setup or build_twin_setup(svc)
    return Changes(setup=setup, store=RolloutStore(svc.database),
                   fleet=InstalledFleet(setup.hub, setup.settings.hub_hosts),
                   send=queue_sender(svc, setup.settings.rollout_queue))


@cache
def changes():
    return build_changes(services(), twin_setup())
