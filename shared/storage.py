"""Blob and Queue clients: a connection string (Azurite locally) or account URIs with the app's identity; BlobStore,
conditional reads and writes of one container's blobs by ETag."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from shared import usage
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


def deadline_options(linear_retry, timeout_s: float) -> dict:
    """For a caller with a deadline (the allocation webhook's CRL reads): each socket wait at most timeout_s, no
    retry of its own (the trust store keeps the CRL it holds and asks again later; DPS retries a 503)."""
    return {"retry_policy": linear_retry(backoff=0, random_jitter_range=0, retry_total=0),
            "connection_timeout": timeout_s, "read_timeout": timeout_s}


def blob_service(settings: Settings, credential_factory, timeout_s: float | None = None):
    """timeout_s: a caller with a deadline (deadline_options); None: client_options."""
    from azure.storage.blob import BlobServiceClient, LinearRetry

    options = client_options(LinearRetry) if timeout_s is None else deadline_options(LinearRetry, timeout_s)
    options["raw_request_hook"] = usage.request_hook("blob")  # counts each request (shared/usage.py)
    if settings.storage_connection_string:
        return BlobServiceClient.from_connection_string(settings.storage_connection_string, **options)
    return BlobServiceClient(settings.storage_blob_uri, credential=credential_factory(), **options)


def token_blob_service(settings: Settings, credential_factory):
    """A Blob client that always authenticates with the app's identity (a bearer token), also where the connection
    string carries an account key (the local stack): Get User Delegation Key accepts only Microsoft Entra
    authorization, over HTTPS ("Get User Delegation Key", request headers: Authorization; docs/contracts.md 5)."""
    from azure.storage.blob import BlobServiceClient, LinearRetry

    return BlobServiceClient(settings.blob_endpoint, credential=credential_factory(), **client_options(LinearRetry),
                             raw_request_hook=usage.request_hook("blob"))


def redact_url(url: str) -> str:
    """url without its query and fragment: a SAS in the query is a credential, never logged or emitted."""
    return url.split("?", 1)[0].split("#", 1)[0]


def queue_service(settings: Settings, credential_factory):
    """For queue administration (create, list). Send and receive through message_queue()."""
    from azure.storage.queue import LinearRetry, QueueServiceClient

    options = {**client_options(LinearRetry), "raw_request_hook": usage.request_hook("queue")}
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


class BlobTooLarge(Exception):
    """The blob is larger than the reader accepts; it was not downloaded."""

    def __init__(self, size: int):
        super().__init__(f"{size} bytes")
        self.size = size


class BlobChanged(Exception):
    """A conditional write lost: the blob changed since it was read (412), or appeared when it was to be created
    (409). The writer reads again and decides again; it never overwrites what it has not seen."""


@dataclass(frozen=True)
class BlobRead:
    data: bytes | None  # None: unchanged since the ETag the reader holds (304 Not Modified)
    etag: str | None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def not_modified(self) -> bool:
        return self.data is None


class BlobStore:
    """The blobs of one container, read and written with HTTP conditions on their ETags.

    Blob Storage follows HTTP/1.1 conditional semantics ("Specifying conditional headers for Blob service
    operations", docs/contracts.md 5): a read with If-None-Match answers 304 while the blob is unchanged, a write
    with If-Match fails with 412 once someone else has written, and a create with If-None-Match: * fails with 409
    when the blob exists. The container client is made on first use, so building a store imports no SDK.
    """

    def __init__(self, container_factory: Callable[[], object]):
        self._factory = container_factory
        self._container = None

    @classmethod
    def for_container(cls, blob_service_factory: Callable[[], object], container: str) -> BlobStore:
        return cls(lambda: blob_service_factory().get_container_client(container))

    def _blob(self, name: str):
        if self._container is None:
            self._container = self._factory()
        return self._container.get_blob_client(name)  # type: ignore[attr-defined]

    def read(self, name: str, etag: str | None = None, max_bytes: int | None = None) -> BlobRead | None:
        """The blob, or None when it does not exist; with etag, BlobRead(data=None) while it is unchanged; with
        max_bytes, BlobTooLarge before a larger blob is downloaded."""
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        conditions = {"etag": etag, "match_condition": MatchConditions.IfModified} if etag else {}
        try:
            downloader = self._blob(name).download_blob(**conditions)
            size = downloader.properties.size
            if max_bytes is not None and size is not None and size > max_bytes:
                raise BlobTooLarge(size)
            data = downloader.readall()
        except ResourceNotFoundError:
            return None
        except HttpResponseError as exc:
            # azure-storage-blob raises the 304 to If-None-Match as ResourceModifiedError (ConditionNotMet)
            if exc.status_code == 304 and etag:
                return BlobRead(None, etag)
            raise
        properties = downloader.properties
        return BlobRead(data, properties.etag, dict(properties.metadata or {}))

    def properties(self, name: str) -> BlobRead | None:
        """ETag and metadata without the content, or None when the blob does not exist."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            properties = self._blob(name).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return BlobRead(None, properties.etag, dict(properties.metadata or {}))

    def write(self, name: str, data: bytes, content_type: str, *, etag: str | None,
              metadata: dict[str, str] | None = None, cache_control: str | None = None) -> str:
        """Store data if the blob is still at etag (If-Match), or does not exist yet when etag is None
        (If-None-Match: *); return the new ETag. Raises BlobChanged when the condition fails."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
        from azure.storage.blob import ContentSettings

        conditions = ({"overwrite": True, "etag": etag, "match_condition": MatchConditions.IfNotModified}
                      if etag else {"overwrite": False})
        try:
            answer = self._blob(name).upload_blob(
                data, content_settings=ContentSettings(content_type=content_type, cache_control=cache_control),
                metadata=metadata or {}, **conditions)
        except (ResourceModifiedError, ResourceExistsError) as exc:
            raise BlobChanged(f"{name}: {type(exc).__name__}") from exc
        return answer["etag"]
