"""MemoryBlobStore: the in-memory stand-in for shared.storage.BlobStore that the CRL unit tests use, and the ETag
semantics both must share. tests/integration/test_crl_distribution.py runs the same scenario against Azurite
through the real BlobStore, so the stand-in cannot drift from Blob Storage."""

from __future__ import annotations

import pytest

from shared.storage import BlobChanged, BlobRead


class MemoryBlobStore:
    """One container in memory with Blob Storage's conditional semantics (docs/contracts.md 5)."""

    def __init__(self):
        self.blobs: dict[str, dict] = {}
        self.reads: list[tuple[str, str | None]] = []  # (name, the If-None-Match ETag) of every read
        self.writes = 0
        self.down = False  # every call raises ConnectionError, as an unreachable account does
        self.after_write = None  # called with the blob name after a write: a concurrent writer
        self._serial = 0

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("storage unreachable")

    def _etag(self) -> str:
        self._serial += 1
        return f'"0x{self._serial:X}"'

    def read(self, name: str, etag: str | None = None) -> BlobRead | None:
        self._check()
        self.reads.append((name, etag))
        blob = self.blobs.get(name)
        if blob is None:
            return None
        if etag is not None and etag == blob["etag"]:
            return BlobRead(None, etag)
        return BlobRead(blob["data"], blob["etag"], dict(blob["metadata"]))

    def properties(self, name: str) -> BlobRead | None:
        self._check()
        blob = self.blobs.get(name)
        return None if blob is None else BlobRead(None, blob["etag"], dict(blob["metadata"]))

    def write(self, name: str, data: bytes, content_type: str, *, etag: str | None,
              metadata: dict[str, str] | None = None, cache_control: str | None = None) -> str:
        self._check()
        current = self.blobs.get(name)
        if (etag is None and current is not None) or (etag is not None and (current is None
                                                                              or current["etag"] != etag)):
            raise BlobChanged(name)
        new = self.put(name, data, metadata, content_type, cache_control)
        self.writes += 1
        if self.after_write:
            hook, self.after_write = self.after_write, None
            hook(name)
        return new

    def put(self, name: str, data: bytes, metadata: dict[str, str] | None = None,
            content_type: str = "application/octet-stream", cache_control: str | None = None) -> str:
        """An unconditional write, as an operator or a restore would do it."""
        etag = self._etag()
        self.blobs[name] = {"data": data, "etag": etag, "metadata": dict(metadata or {}),
                            "content_type": content_type, "cache_control": cache_control}
        return etag

    def delete(self, name: str) -> None:
        self.blobs.pop(name, None)


def conditional_semantics(store) -> None:
    """What the CRL publisher and the webhook rely on: a create fails when the blob exists, a write fails once
    someone else wrote, a read with the current ETag is 'not modified', a missing blob reads as None."""
    assert store.read("ca.crl") is None and store.properties("ca.crl") is None
    first = store.write("ca.crl", b"one", "application/pkix-crl", etag=None, metadata={"crlnumber": "1"})
    with pytest.raises(BlobChanged):
        store.write("ca.crl", b"other", "application/pkix-crl", etag=None)
    read = store.read("ca.crl")
    assert (read.data, read.etag, read.metadata.get("crlnumber")) == (b"one", first, "1")
    assert store.read("ca.crl", etag=first).not_modified
    second = store.write("ca.crl", b"two", "application/pkix-crl", etag=first, metadata={"crlnumber": "2"})
    assert second != first
    with pytest.raises(BlobChanged):
        store.write("ca.crl", b"stale", "application/pkix-crl", etag=first)
    changed = store.read("ca.crl", etag=first)
    assert (changed.data, changed.etag) == (b"two", second)
    assert store.properties("ca.crl").metadata.get("crlnumber") == "2"


def test_memory_store_has_blob_storage_conditional_semantics():
    conditional_semantics(MemoryBlobStore())


def test_memory_store_down_raises_like_an_unreachable_account():
    store = MemoryBlobStore()
    store.down = True
    with pytest.raises(ConnectionError):
        store.read("ca.crl")
