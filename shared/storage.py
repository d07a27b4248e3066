"""Blob and Queue clients: a connection string (Azurite locally) or account URIs with the app's identity."""

from __future__ import annotations

from shared.config import Settings


def client_options(linear_retry) -> dict:
    """Timeouts and retries for a Storage client (linear_retry: that package's LinearRetry class).

    The Storage SDKs' defaults retry three times after 18, 24 and 42 s (about 85 s for a refused connection)
    and wait up to 20 s to connect and 60 s to read. Every caller here has its own, coarser retry (twin setup's
    retry budget, queue redelivery, the next timer run, the webhook's best-effort alert), so one retry after
    about a second and short socket timeouts: an unreachable Storage account shows in seconds, not minutes.
    """
    return {"retry_policy": linear_retry(backoff=1, random_jitter_range=0.5, retry_total=1),
            "connection_timeout": 5, "read_timeout": 20}


def blob_service(settings: Settings, credential_factory):
    from azure.storage.blob import BlobServiceClient, LinearRetry

    options = client_options(LinearRetry)
    if settings.storage_connection_string:
        return BlobServiceClient.from_connection_string(settings.storage_connection_string, **options)
    return BlobServiceClient(settings.storage_blob_uri, credential=credential_factory(), **options)


def queue_service(settings: Settings, credential_factory):
    """For queue administration (create, list). Send and receive through message_queue()."""
    from azure.storage.queue import LinearRetry, QueueServiceClient

    options = client_options(LinearRetry)
    if settings.storage_connection_string:
        return QueueServiceClient.from_connection_string(settings.storage_connection_string, **options)
    return QueueServiceClient(settings.storage_queue_uri, credential=credential_factory(), **options)


def message_queue(service, name: str):
    """A QueueClient whose messages are base64 text, the encoding the Functions queue trigger expects.

    The encode policy must be given per QueueClient: QueueServiceClient.get_queue_client does not pass the
    service client's policies on, so a message sent without it reaches the trigger as plain text and the host
    moves it to the poison queue.
    """
    from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy

    return service.get_queue_client(name, message_encode_policy=TextBase64EncodePolicy(),
                                    message_decode_policy=TextBase64DecodePolicy())
