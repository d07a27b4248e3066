"""Builds the certificate lifecycle's collaborators once per process from the shared Services."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property

from cert_lifecycle.alerts import AlertSender, EmailSender, QueueSender
from cert_lifecycle.authority import CaDirectory, CertificateIssuer
from cert_lifecycle.crl import CrlPublisher
from cert_lifecycle.partners import PartnerAuthenticator, PartnerDirectory
from cert_lifecycle.records import CertificateRecords
from cert_lifecycle.renewal import RenewalService
from cert_lifecycle.revocation import Revoker
from cert_lifecycle.scan import ExpiryScanner
from cert_lifecycle.settings import LifecycleSettings, lifecycle_settings
from cert_lifecycle.signer import key_vault_sign_digest
from shared import keyvault
from shared.audit import AuditWriter
from shared.bootstrap import Services, services
from shared.dps import DpsEnrollments, dps_configured, dps_enrollments
from shared.iothub import IotHub
from shared.retry import RetryPolicy
from shared.storage import BlobStore

HUB_RETRY = RetryPolicy(attempts=5, base_s=0.5, budget_s=60)


@dataclass
class Lifecycle:
    svc: Services

    @cached_property
    def settings(self) -> LifecycleSettings:
        return lifecycle_settings(self.svc.settings)

    @cached_property
    def hosts(self) -> list[str]:
        return self.svc.settings.iot_hub_host_names

    @cached_property
    def records(self) -> CertificateRecords:
        return CertificateRecords(self.svc.database, self.svc.settings.facility_cache_ttl_s)

    @cached_property
    def audit(self) -> AuditWriter:
        return AuditWriter(self.svc.database)

    @cached_property
    def cas(self) -> CaDirectory:
        """The lifecycle's own Key Vault clients, with timeouts that fit the sign endpoint's deadline
        (CERT_SIGN_DEADLINE_SECONDS; azure-core's defaults would wait 300 s per socket read)."""
        options = keyvault.budget_options(self.settings.sign_deadline_s)
        settings, credential = self.svc.settings, self.svc.credential

        def sign_digest_for(key_id: str):
            return key_vault_sign_digest(keyvault.crypto_client(settings, credential, key_id, options))

        certificates = keyvault.certificate_client(settings, credential, options)
        return CaDirectory(settings.regional_cas, certificates, sign_digest_for, self.settings.ca_cache_s)

    @cached_property
    def partners(self) -> PartnerDirectory:
        return PartnerDirectory(self.svc.database)

    @cached_property
    def partner_auth(self) -> PartnerAuthenticator:
        return PartnerAuthenticator(self.settings.partner_tokens, self.partners)

    @cached_property
    def issuer(self) -> CertificateIssuer:
        return CertificateIssuer(self.cas, self.records, self.audit, self.settings, partners=self.partners)

    @cached_property
    def publisher(self) -> CrlPublisher:
        store = BlobStore.for_container(lambda: self.svc.blob_service, self.settings.crl_container)
        return CrlPublisher(store, self.records, self.audit, self.settings)

    @cached_property
    def queues(self) -> QueueSender:
        return QueueSender(lambda: self.svc.queue_service)

    @cached_property
    def hubs(self) -> IotHub:
        return self._own_gateway()

    def _own_gateway(self) -> IotHub:
        """Scanner and collector count their own queries, undisturbed by concurrent invocations. Timers and
        queue messages have no tight deadline: a call waits out throttling for up to a minute."""
        return self.svc.iothub(HUB_RETRY)

    @cached_property
    def dps(self) -> DpsEnrollments | None:
        """The DPS service API adapter (individual enrollments) when the app manages them (DPS_SERVICE_HOSTNAME with
        the app's identity, or DPS_CONNECTION_STRING), else None; built once (one connection pool). A malformed
        setting raises SettingError at first use, naming it."""
        if not dps_configured(self.svc.settings):
            return None
        return dps_enrollments(self.svc.settings, self.svc.credential)

    @cached_property
    def revoker(self) -> Revoker:
        security = self.settings.security_alerts_queue
        return Revoker(self.cas, self.records, self.publisher, self.audit,
                       lambda alert: self.queues.send(security, alert), self.hubs, self.hosts,
                       dps=lambda: self.dps)

    @cached_property
    def alerts(self) -> AlertSender:
        return AlertSender(self.queues, self.settings, EmailSender(self.settings, lambda: self.svc.credential))

    @cached_property
    def scanner(self) -> ExpiryScanner:
        queue = self.settings.renewal_queue
        return ExpiryScanner(self._own_gateway(), self.hosts, lambda message: self.queues.send(queue, message),
                             self.alerts, self.records, self.audit, self.settings)

    @cached_property
    def renewals(self) -> RenewalService:
        return RenewalService(self._own_gateway(), self.hosts, self.issuer, self.cas, self.revoker, self.records,
                              self.audit, self.settings)


@cache
def lifecycle() -> Lifecycle:
    return Lifecycle(services())
