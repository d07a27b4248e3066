"""Blob and Queue clients: a connection string (Azurite locally) or account URIs with the app's identity."""

from __future__ import annotations

from shared.config import Settings


def blob_service(settings: Settings, credential_factory):
    from azure.storage.blob import BlobServiceClient

    if settings.storage_connection_string:
        return BlobServiceClient.from_connection_string(settings.storage_connection_string)
    return BlobServiceClient(settings.storage_blob_uri, credential=credential_factory())


def queue_service(settings: Settings, credential_factory):
    """For queue administration (create, list). Send and receive through message_queue()."""
    from azure.storage.queue import QueueServiceClient

    if settings.storage_connection_string:
        return QueueServiceClient.from_connection_string(settings.storage_connection_string)
    return QueueServiceClient(settings.storage_queue_uri, credential=credential_factory())


def message_queue(service, name: str):
    """A QueueClient whose messages are base64 text, the encoding the Functions queue trigger expects.

    The encode policy must be given per QueueClient: QueueServiceClient.get_queue_client does not pass the
    service client's policies on, so a message sent without it reaches the trigger as plain text and the host
    moves it to the poison queue.
    """
    from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy

    return service.get_queue_client(name, message_encode_policy=TextBase64EncodePolicy(),
                                    message_decode_policy=TextBase64DecodePolicy())
