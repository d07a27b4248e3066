"""Key Vault clients (certificates: the regional CAs; keys: signing). The product reads and writes no secret since
the CRLs moved to Blob Storage."""

from __future__ import annotations

from shared import usage
from shared.config import Settings

# azure-core's defaults wait up to 300 s to connect and to read and retry a refused connection three times with
# growing sleeps (about 5 s), per call. The webhook answers DPS within seconds and the other callers retry at their
# own level (timers, queue redelivery), so a Key Vault that does not answer must show quickly: one immediate retry
# of a refused connection, short socket timeouts; throttling (429/503, Retry-After honoured) keeps its retries.
CLIENT_OPTIONS = {"connection_timeout": 5, "read_timeout": 15, "retry_total": 3, "retry_connect": 1,
                  "retry_read": 1, "retry_backoff_factor": 0.5, "retry_backoff_max": 4}


def deadline_options(timeout_s: float) -> dict:
    """Options for a caller with a deadline (the allocation webhook): each socket wait at most timeout_s and no
    retry of its own (the caller's cache keeps the last good value and asks again later; DPS retries a 503)."""
    return {"connection_timeout": timeout_s, "read_timeout": timeout_s, "retry_total": 0}


def budget_options(deadline_s: float) -> dict:
    """Options for callers whose endpoint has a deadline of its own (the certificate lifecycle's sign and revoke,
    cert_lifecycle/settings.py): a connection within a quarter of it, an answer within half, one retry of a refused
    or reset connection or a throttled call; the endpoint's deadline (shared/retry.py Deadlines) bounds the rest."""
    return {"connection_timeout": deadline_s / 4, "read_timeout": deadline_s / 2, "retry_total": 1,
            "retry_connect": 1, "retry_read": 1, "retry_backoff_factor": 0.2, "retry_backoff_max": 1}


def _options(settings: Settings, options: dict | None = None) -> dict:
    return {"verify_challenge_resource": settings.key_vault_verify_challenge_resource,
            "raw_request_hook": usage.request_hook("keyvault"),  # counts each request (shared/usage.py)
            **CLIENT_OPTIONS, **(options or {})}


def certificate_client(settings: Settings, credential, options: dict | None = None):
    """options: e.g. deadline_options(s), over CLIENT_OPTIONS."""
    from azure.keyvault.certificates import CertificateClient

    return CertificateClient(settings.key_vault_url, credential, **_options(settings, options))


def key_client(settings: Settings, credential, options: dict | None = None):
    from azure.keyvault.keys import KeyClient

    return KeyClient(settings.key_vault_url, credential, **_options(settings, options))


def crypto_client(settings: Settings, credential, key_id: str, options: dict | None = None):
    """CryptographyClient for one Key Vault key (its `sign` is how the CA keys are used; they never leave)."""
    from azure.keyvault.keys.crypto import CryptographyClient

    return CryptographyClient(key_id, credential, **_options(settings, options))
