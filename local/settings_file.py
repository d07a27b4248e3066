"""local.settings.json for the local stack, written the way Core Tools reads it (Values -> environment).

The stack owns the values that point at its emulators and the secrets it generated; any other value a
developer adds is kept when the stack rewrites the file. The file is git-ignored: it holds generated keys.
"""

from __future__ import annotations

import json
from pathlib import Path

from local.azurite import STACK_PORTS, AzuritePorts, blob_endpoint, connection_string
from local.secrets import stack_secret
from local.seed import data
from local.tls import TlsFiles

HOST_PORT = 7071
KEY_VAULT_PORT = 8450
IDENTITY_PORT = 8449
DPS_SERVICE_PORT = 8451  # the DPS service API emulator (local/dps/service.py DEFAULT_PORT)
CRL_CONTAINER = "crl"
# Partner tokens (docs/partners.md): the identity endpoint stands in for Entra; PARTNER_TOKEN_* point the app at it.
PARTNER_TOKEN_AUDIENCE = "api://sensor-onboarding-local"


def partner_token_issuer(identity_port: int = IDENTITY_PORT) -> str:
    return f"http://127.0.0.1:{identity_port}/partners/v2.0"


def stack_values(state_dir: Path, tls: TlsFiles, hubs: list[data.LocalHub] | None = None,
                 azurite: AzuritePorts | None = None) -> dict[str, str]:
    ports = azurite or STACK_PORTS
    storage = connection_string(ports)
    return {
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "AzureWebJobsStorage": storage,
        "STORAGE_CONNECTION_STRING": storage,
        "SQL_CONNECTION_STRING": f"Driver=SQLite3;Database={(state_dir / 'onboarding.db').resolve()}",
        "KEY_VAULT_URL": f"https://localhost:{KEY_VAULT_PORT}/",
        "KEY_VAULT_VERIFY_CHALLENGE_RESOURCE": "false",
        "REGIONAL_CAS": ",".join(f"{region}={name}" for region, name in data.CA_NAMES.items()),
        # Where certificates say their CA's CRL is: the Azurite container itself, which serves its blobs to anonymous
        # GETs as a public container does (the default, written out so that it can be found and changed).
        "CRL_CONTAINER": CRL_CONTAINER,
        "CRL_DISTRIBUTION_URL": f"{blob_endpoint(ports)}/{CRL_CONTAINER}",
        # The DPS service API emulator (`python -m local.dps serve`): the app disallows a device revoked for cause
        # there with its managed identity's token, as in Azure (shared/dps.py); the DPS simulator reads its store.
        "DPS_SERVICE_HOSTNAME": f"localhost:{DPS_SERVICE_PORT}",
        "IOT_HUB_HOSTNAMES": ",".join(h.host_name for h in hubs or data.HUBS),
        # Event Grid names hubs by name; locally host names are not {name}.azure-devices.net.
        "IOT_HUB_NAMES": ",".join(f"{h.name}={h.host_name}" for h in hubs or data.HUBS),
        # The App Service managed identity protocol, served by the stack (local/identity.py).
        "IDENTITY_ENDPOINT": f"http://127.0.0.1:{IDENTITY_PORT}/msi/token",
        "IDENTITY_HEADER": stack_secret(state_dir, "identity-header"),
        # Manufacturing partners' tokens: issued and published by the same endpoint (local/identity.py), validated
        # by the product as in Azure (cert_lifecycle/partners.py); `onboarding partners create` prints one.
        "PARTNER_TOKEN_ISSUER": partner_token_issuer(),
        "PARTNER_TOKEN_AUDIENCE": PARTNER_TOKEN_AUDIENCE,
        "PARTNER_TOKEN_JWKS_URL": f"http://127.0.0.1:{IDENTITY_PORT}/partners/discovery/v2.0/keys",
        "REQUESTS_CA_BUNDLE": str(tls.ca_bundle.resolve()),
    }


def write_local_settings(path: Path, values: dict[str, str]) -> dict:
    """Merge the stack's values into path (creating it) and return the whole document."""
    document = json.loads(path.read_text()) if path.exists() else {}
    document.setdefault("IsEncrypted", False)
    document.setdefault("Values", {}).update(values)
    document.setdefault("Host", {}).setdefault("LocalHttpPort", HOST_PORT)
    path.write_text(json.dumps(document, indent=2) + "\n")
    path.chmod(0o600)
    return document
