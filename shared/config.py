"""Settings read from environment variables (Functions app settings; locally local.settings.json).

Each setting is read and validated at first use, and a missing or malformed one raises SettingError naming
the variable, so a function that does not need a setting never fails because of it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property


class SettingError(RuntimeError):
    """A required app setting is missing or malformed."""


@dataclass(frozen=True)
class RegionalCa:
    region: str
    name: str  # Key Vault certificate and key name, e.g. intermediate-ca-west


class Settings:
    """Typed view over app settings. Build once per process (see shared.bootstrap)."""

    def __init__(self, environ: Mapping[str, str] | None = None):
        self._env = os.environ if environ is None else environ

    # -- raw access (feature folders declare their own settings with these) ------------------------
    def get(self, name: str, default: str | None = None) -> str | None:
        """The stripped value of name, or default when unset or blank."""
        return self._get(name, default)

    def required(self, name: str) -> str:
        return self._require(name)

    def flag(self, name: str, default: bool) -> bool:
        return self._bool(name, default)

    def number(self, name: str, default: float, minimum: float = 0) -> float:
        return self._number(name, default, minimum)

    def _get(self, name: str, default: str | None = None) -> str | None:
        value = self._env.get(name)
        return value.strip() if value and value.strip() else default

    def _require(self, name: str) -> str:
        value = self._get(name)
        if value is None:
            raise SettingError(f"app setting {name} is not set")
        return value

    def _bool(self, name: str, default: bool) -> bool:
        value = self._get(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise SettingError(f"app setting {name} must be true or false, got {value!r}")

    def _number(self, name: str, default: float, minimum: float = 0) -> float:
        value = self._get(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise SettingError(f"app setting {name} must be a number, got {value!r}") from None
        if number < minimum:
            raise SettingError(f"app setting {name} must be >= {minimum}, got {value!r}")
        return number

    def _list(self, name: str) -> list[str]:
        return [item.strip() for item in (self._get(name) or "").split(",") if item.strip()]

    # -- identity -------------------------------------------------------------------------------
    @cached_property
    def managed_identity_client_id(self) -> str | None:
        """Client id of a user-assigned identity; None means the system-assigned one."""
        return self._get("AZURE_CLIENT_ID")

    @cached_property
    def use_managed_identity(self) -> bool:
        """In Azure (or against the local identity endpoint) use ManagedIdentityCredential."""
        default = bool(self._get("IDENTITY_ENDPOINT") or self._get("WEBSITE_INSTANCE_ID"))
        return self._bool("USE_MANAGED_IDENTITY", default)

    # -- SQL ------------------------------------------------------------------------------------
    @cached_property
    def sql_connection_string(self) -> str:
        return self._require("SQL_CONNECTION_STRING")

    # -- Storage --------------------------------------------------------------------------------
    @cached_property
    def storage_connection_string(self) -> str | None:
        """Connection string (Azurite locally); None in Azure, where the service URIs are used."""
        value = self._get("STORAGE_CONNECTION_STRING")
        if value == "UseDevelopmentStorage=true":
            value = (
                "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
                "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
                "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
                "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
            )
        return value

    def _storage_uri(self, name: str) -> str:
        if self.storage_connection_string is None:
            return self._require(name)
        return self._get(name, "") or ""

    @cached_property
    def storage_blob_uri(self) -> str:
        return self._storage_uri("STORAGE_BLOB_URI")

    @cached_property
    def storage_queue_uri(self) -> str:
        return self._storage_uri("STORAGE_QUEUE_URI")

    @cached_property
    def blob_endpoint(self) -> str:
        """The account's Blob service URL: the connection string's BlobEndpoint (or the one its AccountName and
        EndpointSuffix make), else STORAGE_BLOB_URI."""
        if self.storage_connection_string is None:
            return self.storage_blob_uri.rstrip("/")
        parts = dict(p.split("=", 1) for p in self.storage_connection_string.split(";") if "=" in p)
        if parts.get("BlobEndpoint"):
            return parts["BlobEndpoint"].rstrip("/")
        if not parts.get("AccountName"):
            raise SettingError("app setting STORAGE_CONNECTION_STRING has neither BlobEndpoint nor AccountName")
        protocol = parts.get("DefaultEndpointsProtocol", "https")
        return f"{protocol}://{parts['AccountName']}.blob.{parts.get('EndpointSuffix', 'core.windows.net')}"

    @cached_property
    def crl_container(self) -> str:
        """The Blob container of the CRLs and CA certificates (shared/crl.py says what lies in it)."""
        return self._get("CRL_CONTAINER", "crl")

    @cached_property
    def crl_distribution_url(self) -> str:
        """The public base URL of the CRL container, written into every certificate issued (CRL Distribution Points,
        Authority Information Access); default: the container's own URL. A static website or a CDN in front of the
        container goes here: certificates keep the URL for their whole life, so set it before issuing."""
        url = self._get("CRL_DISTRIBUTION_URL") or f"{self.blob_endpoint}/{self.crl_container}"
        if not url.startswith(("http://", "https://")) or any(c in url for c in " ?#"):
            raise SettingError(f"app setting CRL_DISTRIBUTION_URL must be an http(s) URL without query, got {url!r}")
        return url.rstrip("/")

    @cached_property
    def templates_container(self) -> str:
        return self._get("TEMPLATES_CONTAINER", "sensor-configurations")

    @cached_property
    def security_alerts_queue(self) -> str:
        return self._get("SECURITY_ALERTS_QUEUE", "security-alerts")

    # -- Key Vault ------------------------------------------------------------------------------
    @cached_property
    def key_vault_url(self) -> str:
        url = self._require("KEY_VAULT_URL")
        if not url.startswith("https://"):
            raise SettingError(f"app setting KEY_VAULT_URL must be an https URL, got {url!r}")
        return url

    @cached_property
    def key_vault_verify_challenge_resource(self) -> bool:
        """False only against the local emulator, whose host is not *.vault.azure.net."""
        return self._bool("KEY_VAULT_VERIFY_CHALLENGE_RESOURCE", True)

    @cached_property
    def regional_cas(self) -> list[RegionalCa]:
        """REGIONAL_CAS=west=intermediate-ca-west,central=intermediate-ca-central,..."""
        cas = []
        for item in self._list("REGIONAL_CAS"):
            region, sep, name = item.partition("=")
            if not sep or not region.strip() or not name.strip():
                raise SettingError(f"app setting REGIONAL_CAS: expected region=certificateName, got {item!r}")
            cas.append(RegionalCa(region.strip(), name.strip()))
        if not cas:
            raise SettingError("app setting REGIONAL_CAS is not set")
        return cas

    # -- IoT Hub --------------------------------------------------------------------------------
    @cached_property
    def iot_hub_connection_strings(self) -> list[str]:
        """Comma-separated hub connection strings (development); empty when identity is used."""
        return self._list("IOT_HUB_CONNECTION_STRINGS")

    @cached_property
    def iot_hub_host_names(self) -> list[str]:
        """Every hub the app works with, by host name (from the connection strings when given)."""
        if self.iot_hub_connection_strings:
            hosts = []
            for conn in self.iot_hub_connection_strings:
                parts = dict(p.split("=", 1) for p in conn.split(";") if "=" in p)
                if "HostName" not in parts:
                    raise SettingError("app setting IOT_HUB_CONNECTION_STRINGS: an entry has no HostName")
                hosts.append(parts["HostName"])
            return hosts
        hosts = self._list("IOT_HUB_HOSTNAMES")
        if not hosts:
            raise SettingError("neither IOT_HUB_HOSTNAMES nor IOT_HUB_CONNECTION_STRINGS is set")
        return hosts

    def iot_hub_connection_string(self, host_name: str) -> str | None:
        for conn in self.iot_hub_connection_strings:
            if f"HostName={host_name};" in conn + ";":
                return conn
        return None

    @cached_property
    def iot_hub_timeout_s(self) -> float:
        """Connect/read timeout of one IoT Hub call, for every feature."""
        return self._number("IOT_HUB_TIMEOUT_SECONDS", 10, minimum=0.1)

    # -- shared by allocation and the certificate lifecycle ---------------------------------------
    @cached_property
    def facility_cache_ttl_s(self) -> float:
        return self._number("FACILITY_CACHE_TTL_SECONDS", 60)
