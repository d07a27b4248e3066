"""Key Vault clients (secrets: CRLs; certificates: the regional CAs; keys: signing)."""

from __future__ import annotations

from shared.config import Settings


def _options(settings: Settings) -> dict:
    return {"verify_challenge_resource": settings.key_vault_verify_challenge_resource}


def secret_client(settings: Settings, credential):
    from azure.keyvault.secrets import SecretClient

    return SecretClient(settings.key_vault_url, credential, **_options(settings))


def certificate_client(settings: Settings, credential):
    from azure.keyvault.certificates import CertificateClient

    return CertificateClient(settings.key_vault_url, credential, **_options(settings))


def key_client(settings: Settings, credential):
    from azure.keyvault.keys import KeyClient

    return KeyClient(settings.key_vault_url, credential, **_options(settings))


def crypto_client(settings: Settings, credential, key_id: str):
    """CryptographyClient for one Key Vault key (its `sign` is how the CA keys are used; they never leave)."""
    from azure.keyvault.keys.crypto import CryptographyClient

    return CryptographyClient(key_id, credential, **_options(settings))
