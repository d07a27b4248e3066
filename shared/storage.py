"""Blob and Queue clients: a connection string (Azurite locally) or account URIs with the app's identity."""

from __future__ import annotations

from shared.config import Settings


def blob_service(settings: Settings, credential_factory):
    from azure.storage.blob import BlobServiceClient

    if settings.storage_connection_string:
        return BlobServiceClient.from_connection_string(settings.storage_connection_string)
    return BlobServiceClient(settings.storage_blob_uri, credential=credential_factory())


def queue_service(settings: Settings, credential_factory):
    """Messages are base64-encoded, the encoding the Functions queue trigger expects by default."""
    from azure.storage.queue import (
        BinaryBase64DecodePolicy,
        QueueServiceClient,
        TextBase64EncodePolicy,
    )

    policies = {"message_encode_policy": TextBase64EncodePolicy(),
                "message_decode_policy": BinaryBase64DecodePolicy()}
    if settings.storage_connection_string:
        return QueueServiceClient.from_connection_string(settings.storage_connection_string, **policies)
    return QueueServiceClient(settings.storage_queue_uri, credential=credential_factory(), **policies)
