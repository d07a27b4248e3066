"""The emulator's vault store (versions, atomic persistence, soft delete) and its path routing."""

import pytest

from local.keyvault.app import Vault, path_segments, route
from local.keyvault.errors import KeyVaultError
from local.keyvault.store import VaultStore, base_attributes, new_version


def _secret(value: str) -> dict:
    return {"version": new_version(), "value": value, "attributes": base_attributes()}


def test_versions_latest_and_reload(tmp_path):
    store = VaultStore(tmp_path)
    first, second = _secret("a"), _secret("b")
    store.add_versions({"secrets": ("s", first)})
    store.add_versions({"secrets": ("s", second)})
    assert store.get("secrets", "s")[1]["value"] == "b"
    assert store.get("secrets", "s", first["version"])[1]["value"] == "a"
    reloaded = VaultStore(tmp_path)
    assert [r["value"] for r in reloaded.versions("secrets", "s")] == ["a", "b"]
    assert store.path.stat().st_mode & 0o077 == 0
    assert not list(store.path.parent.glob("*.tmp"))
    with pytest.raises(KeyVaultError) as missing:
        store.get("secrets", "s", "0" * 32)
    assert (missing.value.status, missing.value.code) == (404, "SecretNotFound")


def test_soft_delete_blocks_reuse_until_recovered_or_purged(tmp_path):
    store = VaultStore(tmp_path)
    store.add_versions({"secrets": ("s", _secret("a"))})
    deleted = store.delete("secrets", "s")
    assert deleted["scheduledPurgeDate"] - deleted["deletedDate"] == 90 * 86400
    with pytest.raises(KeyVaultError) as reused:
        store.add_versions({"secrets": ("s", _secret("b"))})
    assert (reused.value.status, reused.value.inner) == (409, "ObjectIsDeletedButRecoverable")
    store.recover("secrets", "s")
    assert store.get("secrets", "s")[1]["value"] == "a"
    store.delete("secrets", "s")
    store.purge("secrets", "s")
    store.add_versions({"secrets": ("s", _secret("c"))})
    with pytest.raises(KeyVaultError):
        store.purge("secrets", "s")


def test_certificate_delete_takes_its_key_and_secret_along(tmp_path):
    store = VaultStore(tmp_path)
    version = new_version()
    records = {
        c: ("ca", {"version": version, "attributes": base_attributes()}) for c in ("certificates", "keys", "secrets")
    }
    store.add_versions(records, managed=True)
    assert store.is_managed("keys", "ca")
    store.delete("certificates", "ca", cascade=("keys", "secrets"))
    assert not store.exists("keys", "ca") and not store.exists("secrets", "ca")
    with pytest.raises(KeyVaultError) as reused:
        store.add_versions({"secrets": ("ca", _secret("x"))})
    assert reused.value.status == 409
    store.recover("certificates", "ca")
    assert store.get("keys", "ca")[1]["version"] == version


def test_a_failed_multi_object_write_leaves_nothing(tmp_path):
    store = VaultStore(tmp_path)
    store.add_versions({"keys": ("k", {"version": "1", "attributes": {}})})
    store.delete("keys", "k")
    with pytest.raises(KeyVaultError):
        store.add_versions({"secrets": ("k", _secret("x")), "keys": ("k", {"version": "2", "attributes": {}})})
    assert not store.exists("secrets", "k")


@pytest.mark.parametrize(
    ("path", "segments"),
    [
        ("/secrets", ["secrets"]),
        ("/secrets/", ["secrets"]),
        ("/secrets/a/", ["secrets", "a", ""]),
        ("/keys/k//sign", ["keys", "k", "", "sign"]),
    ],
)
def test_path_segments(path, segments):
    assert path_segments(path) == segments


@pytest.mark.parametrize(
    ("method", "path", "handler", "args"),
    [
        ("GET", "/secrets", "list_objects", ("secrets",)),
        ("PUT", "/secrets/a", "set_secret", ("a",)),
        ("GET", "/secrets/a/", "get_secret", ("a", "")),
        ("GET", "/secrets/a", "get_secret", ("a", "")),
        ("GET", "/secrets/a/abc123", "get_secret", ("a", "abc123")),
        ("PATCH", "/secrets/a/abc123", "update_secret", ("a", "abc123")),
        ("GET", "/secrets/a/versions", "list_versions", ("secrets", "a")),
        ("DELETE", "/secrets/a", "delete", ("secrets", "a")),
        ("POST", "/keys/k/create", "create_key", ("k",)),
        ("PUT", "/keys/k", "import_key", ("k",)),
        ("POST", "/keys/k//sign", "sign", ("k", "")),
        ("POST", "/keys/k/v1/verify", "verify", ("k", "v1")),
        ("POST", "/certificates/c/import", "import_certificate", ("c",)),
        ("GET", "/certificates/c/policy", "get_certificate_policy", ("c",)),
        ("GET", "/certificates/c/", "get_certificate", ("c", "")),
        ("GET", "/deletedkeys/k", "get_deleted", ("keys", "k")),
        ("DELETE", "/deletedcertificates/c", "purge", ("certificates", "c")),
        ("POST", "/deletedsecrets/s/recover", "recover", ("secrets", "s")),
    ],
)
def test_routes(tmp_path, method, path, handler, args):
    found, found_args = route(Vault(VaultStore(tmp_path)), method, path_segments(path))
    assert found.__name__ == handler and found_args == args


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/secrets/bad_name", 400, "BadParameter"),
        ("GET", "/secrets/a/bad.version", 400, "BadParameter"),
        ("POST", "/keys/k/v/encrypt", 400, "BadParameter"),
        ("POST", "/secrets/restore", 400, "BadParameter"),
        ("POST", "/certificates/c/create", 400, "BadParameter"),
        ("PUT", "/certificates/c", 405, "MethodNotAllowed"),
        ("GET", "/", 404, "NotFound"),
        ("GET", "/storage", 404, "NotFound"),
    ],
)
def test_route_refusals(tmp_path, method, path, status, code):
    with pytest.raises(KeyVaultError) as refused:
        route(Vault(VaultStore(tmp_path)), method, path_segments(path))
    assert (refused.value.status, refused.value.code) == (status, code)
