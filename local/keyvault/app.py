"""The Key Vault emulator: the REST subset the Azure SDKs (secrets, keys, certificates) call, on one vault.

The product's unmodified SDK clients talk to it: Key Vault's challenge authentication (401 + WWW-Authenticate
first, then a bearer token for https://vault.azure.net from the local managed identity), the data-plane paths
and JSON names of the SDKs' generated code, Key Vault's error JSON and status codes, and soft delete. The vault
URL in every returned id is the one the client called, so ids round-trip into CryptographyClient.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from cryptography.exceptions import UnsupportedAlgorithm
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from local.faults import FaultEngine, engine_from_environment, install
from local.identity import verify_token
from local.keyvault import certs, crypto
from local.keyvault.crypto import CryptoInputError
from local.keyvault.errors import KeyVaultError, bad_parameter, conflict, forbidden
from local.keyvault.store import RECOVERABLE_DAYS, RECOVERY_LEVEL, VaultStore, base_attributes, new_version

log = logging.getLogger("local.keyvault")

VAULT_RESOURCE = "https://vault.azure.net"
# The tenant named in the challenge; azure-identity passes it to the credential, which the local MI ignores.
LOCAL_TENANT_ID = "00000000-0000-0000-0000-0000000010ca"
API_VERSIONS = frozenset({"2016-10-01", "7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "2025-07-01", "2026-04-01"})
LATEST_API_VERSION = "2026-04-01"
MAX_BODY_BYTES = 1 << 20
MAX_SECRET_CHARS = 25 * 1024
MAX_TAGS = 15
PAGE_SIZE = 25
NAME_RE = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
VERSION_RE = re.compile(r"^[0-9a-zA-Z]{1,64}$")
KEY_TYPES = ("EC", "EC-HSM", "RSA", "RSA-HSM")
UNSUPPORTED_KEY_OPS = ("encrypt", "decrypt", "wrapkey", "unwrapkey", "release", "attestation")


def challenge_header(tenant_id: str) -> str:
    return f'Bearer authorization="https://login.microsoftonline.com/{tenant_id}", resource="{VAULT_RESOURCE}"'


@dataclass
class Ctx:
    """One request as the handlers see it: where the vault is, the query, and the raw body."""

    vault: str
    path: str
    query: dict[str, str]
    raw_body: bytes
    api_version: str

    def json(self) -> dict:
        if not self.raw_body.strip():
            raise bad_parameter("The request body is missing; a JSON object is required")
        try:
            body = json.loads(self.raw_body)
        except (ValueError, RecursionError) as exc:
            raise bad_parameter(f"The request body is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise bad_parameter("The request body must be a JSON object")
        return body


# --- input validation --------------------------------------------------------------------------------------


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise bad_parameter(f"The request URI contains an invalid name: {name}")
    return name


def check_version(version: str) -> str:
    if version and not VERSION_RE.match(version):
        raise bad_parameter(f"The request URI contains an invalid version: {version}")
    return version


def parse_tags(body: dict) -> dict | None:
    tags = body.get("tags")
    if tags is None:
        return None
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise bad_parameter("Property tags has invalid value: an object of string values is required")
    if len(tags) > MAX_TAGS:
        raise bad_parameter(f"Too many tags: at most {MAX_TAGS} are allowed")
    return tags


def parse_attributes(body: dict) -> dict:
    """enabled/nbf/exp from a request; read-only fields (created, updated...) are ignored like Key Vault does."""
    attrs = body.get("attributes")
    if attrs is None:
        return {}
    if not isinstance(attrs, dict):
        raise bad_parameter("Property attributes has invalid value")
    out: dict = {}
    if attrs.get("enabled") is not None:
        if not isinstance(attrs["enabled"], bool):
            raise bad_parameter("Property attributes.enabled has invalid value")
        out["enabled"] = attrs["enabled"]
    for field in ("nbf", "exp"):
        if attrs.get(field) is not None:
            if not isinstance(attrs[field], int) or isinstance(attrs[field], bool):
                raise bad_parameter(f"Property attributes.{field} has invalid value: unix time expected")
            out[field] = attrs[field]
    if attrs.get("exportable"):  # keys stay in the vault: the emulator has no key release
        raise bad_parameter("Exportable keys need a release policy; key release is not supported by the local emulator")
    return out


def parse_key_ops(ops: object, family: str) -> list[str]:
    if ops is None:
        return crypto.default_ops(family)
    if not isinstance(ops, list) or not all(isinstance(o, str) and o in crypto.KNOWN_OPS for o in ops):
        raise bad_parameter(f"Property key_ops has invalid value: {ops}")
    return list(dict.fromkeys(ops))


def reject_release_policy(body: dict) -> None:
    if body.get("release_policy") is not None:
        raise bad_parameter("Key release policies are not supported by the local emulator")


# --- rendering (allow-lists: a private key field never reaches a response) -------------------------------


def render_attributes(attrs: dict, key: bool = False) -> dict:
    out = {k: attrs[k] for k in ("enabled", "nbf", "exp", "created", "updated") if attrs.get(k) is not None}
    out["recoveryLevel"] = RECOVERY_LEVEL
    out["recoverableDays"] = RECOVERABLE_DAYS
    if key:
        out["exportable"] = False
    return out


def object_id(ctx: Ctx, collection: str, name: str, version: str | None = None) -> str:
    return f"{ctx.vault}/{collection}/{name}" + (f"/{version}" if version else "")


def render_secret(ctx: Ctx, name: str, rec: dict, managed: bool, value: bool = True) -> dict:
    out: dict = {"id": object_id(ctx, "secrets", name, rec["version"])}
    if value:
        out["value"] = rec["value"]
    if rec.get("contentType") is not None:
        out["contentType"] = rec["contentType"]
    out["attributes"] = render_attributes(rec["attributes"])
    if rec.get("tags"):
        out["tags"] = rec["tags"]
    if managed:
        out["kid"] = object_id(ctx, "keys", name, rec["version"])
        out["managed"] = True
    return out


def render_key(ctx: Ctx, name: str, rec: dict, managed: bool) -> dict:
    jwk = {"kid": object_id(ctx, "keys", name, rec["version"]), "kty": rec["kty"], "key_ops": rec["key_ops"]}
    jwk.update({k: v for k, v in rec["public_jwk"].items() if k in ("crv", "x", "y", "n", "e")})
    out: dict = {"key": jwk, "attributes": render_attributes(rec["attributes"], key=True)}
    if rec.get("tags"):
        out["tags"] = rec["tags"]
    if managed:
        out["managed"] = True
    return out


def render_policy(ctx: Ctx, name: str, policy: dict) -> dict:
    return {"id": f"{object_id(ctx, 'certificates', name)}/policy", **policy}


def render_certificate(ctx: Ctx, name: str, rec: dict, policy: bool) -> dict:
    ver = rec["version"]
    out: dict = {
        "id": object_id(ctx, "certificates", name, ver),
        "kid": object_id(ctx, "keys", name, ver),
        "sid": object_id(ctx, "secrets", name, ver),
        "x5t": rec["x5t"],
        "cer": rec["cer"],
        "attributes": render_attributes(rec["attributes"]),
    }
    if rec.get("tags"):
        out["tags"] = rec["tags"]
    if policy:
        out["policy"] = render_policy(ctx, name, rec["policy"])
    return out


def render_deleted(ctx: Ctx, collection: str, name: str, entry: dict) -> dict:
    rec = entry["versions"][entry["order"][-1]]
    managed = bool(entry.get("managed"))
    if collection == "secrets":
        out = render_secret(ctx, name, rec, managed, value=False)
    elif collection == "keys":
        out = render_key(ctx, name, rec, managed)
    else:
        out = render_certificate(ctx, name, rec, policy=True)
    out["recoveryId"] = f"{ctx.vault}/deleted{collection}/{name}"
    if "deletedDate" in entry:
        out["deletedDate"] = entry["deletedDate"]
        out["scheduledPurgeDate"] = entry["scheduledPurgeDate"]
    return out


def item_of(ctx: Ctx, collection: str, name: str, rec: dict, managed: bool, versioned: bool) -> dict:
    ident = object_id(ctx, collection, name, rec["version"] if versioned else None)
    item: dict = {"kid" if collection == "keys" else "id": ident, "attributes": render_attributes(rec["attributes"])}
    if rec.get("tags"):
        item["tags"] = rec["tags"]
    if collection == "secrets" and rec.get("contentType") is not None:
        item["contentType"] = rec["contentType"]
    if collection == "certificates":
        item["x5t"] = rec["x5t"]
    if managed and collection != "certificates":
        item["managed"] = True
    return item


def paginate(ctx: Ctx, items: list[dict]) -> dict:
    """Key Vault pages lists (at most 25 items) and links the next page with $skiptoken."""
    raw_max = ctx.query.get("maxresults")
    try:
        page = int(raw_max) if raw_max is not None else PAGE_SIZE
        start = int(ctx.query.get("$skiptoken", "0"))
    except ValueError:
        raise bad_parameter("maxresults and $skiptoken must be integers") from None
    if not 1 <= page <= PAGE_SIZE:
        raise bad_parameter(f"Invalid maxresults: {page}. It must be between 1 and {PAGE_SIZE}")
    if start < 0:
        raise bad_parameter("Invalid $skiptoken")
    chunk = items[start : start + page]
    next_link = None
    if start + page < len(items):
        params = {"api-version": ctx.api_version, "$skiptoken": start + page, "maxresults": page}
        next_link = f"{ctx.vault}{ctx.path}?{urlencode(params)}"
    return {"value": chunk, "nextLink": next_link}


# --- the vault ---------------------------------------------------------------------------------------------


class Vault:
    """Route handlers; each takes the request context and path arguments and returns JSON (or None: 204)."""

    def __init__(self, store: VaultStore) -> None:
        self.store = store

    # secrets -------------------------------------------------------------------------------------------

    def set_secret(self, ctx: Ctx, name: str) -> dict:
        body = ctx.json()
        value = body.get("value")
        if not isinstance(value, str):
            raise bad_parameter("Property value is required and must be a string")
        if len(value) > MAX_SECRET_CHARS:
            raise bad_parameter(f"Secret value is too large: at most {MAX_SECRET_CHARS} characters are allowed")
        content_type = body.get("contentType")
        if content_type is not None and not isinstance(content_type, str):
            raise bad_parameter("Property contentType has invalid value")
        if self.store.is_managed("secrets", name):
            raise conflict(f"Secret {name} belongs to certificate {name}; it can only change through the certificate")
        rec = {
            "version": new_version(),
            "value": value,
            "contentType": content_type,
            "tags": parse_tags(body),
            "attributes": base_attributes(parse_attributes(body)),
        }
        self.store.add_versions({"secrets": (name, rec)})
        return render_secret(ctx, name, rec, managed=False)

    def get_secret(self, ctx: Ctx, name: str, version: str = "") -> dict:
        entry, rec = self.store.get("secrets", name, version)
        if not rec["attributes"].get("enabled", True):
            raise forbidden("Operation get is not allowed on a disabled secret.", "SecretDisabled")
        return render_secret(ctx, name, rec, bool(entry.get("managed")))

    def update_secret(self, ctx: Ctx, name: str, version: str) -> dict:
        body = ctx.json()
        changes: dict = {"attributes": parse_attributes(body)}
        if "contentType" in body:
            if body["contentType"] is not None and not isinstance(body["contentType"], str):
                raise bad_parameter("Property contentType has invalid value")
            changes["contentType"] = body["contentType"]
        if "tags" in body:
            changes["tags"] = parse_tags(body)
        rec = self.store.update("secrets", name, version, changes)
        return render_secret(ctx, name, rec, self.store.is_managed("secrets", name), value=False)

    # keys ----------------------------------------------------------------------------------------------

    def _check_key_name_free(self, name: str) -> None:
        if self.store.is_managed("keys", name):
            raise conflict(f"Key {name} belongs to certificate {name}; it can only change through the certificate")

    def _add_key(self, ctx: Ctx, name: str, key: crypto.PrivateKey, kty: str, ops: list[str], body: dict) -> dict:
        rec = {
            "version": new_version(),
            "kty": kty,
            "key_ops": ops,
            "public_jwk": crypto.public_jwk(key),
            "private_pem": crypto.private_key_to_pem(key),
            "tags": parse_tags(body),
            "attributes": base_attributes(parse_attributes(body)),
        }
        self.store.add_versions({"keys": (name, rec)})
        return render_key(ctx, name, rec, managed=False)

    def create_key(self, ctx: Ctx, name: str) -> dict:
        body = ctx.json()
        kty = body.get("kty")
        if kty in ("oct", "oct-HSM"):
            raise bad_parameter(f"Invalid kty value: {kty}", "KeyTypeNotSupported")
        if kty not in KEY_TYPES:
            raise bad_parameter(f"Invalid kty value: {kty}")
        reject_release_policy(body)
        for field in ("key_size", "public_exponent"):
            if body.get(field) is not None and (not isinstance(body[field], int) or isinstance(body[field], bool)):
                raise bad_parameter(f"Property {field} has invalid value")
        crv = body.get("crv")
        if crv is not None and not isinstance(crv, str):
            raise bad_parameter("Property crv has invalid value")
        self._check_key_name_free(name)
        ops = parse_key_ops(body.get("key_ops"), kty.removesuffix("-HSM"))
        parse_tags(body)
        parse_attributes(body)
        key = crypto.generate_key(kty, body.get("key_size"), crv, body.get("public_exponent"))
        return self._add_key(ctx, name, key, kty, ops, body)

    def import_key(self, ctx: Ctx, name: str) -> dict:
        body = ctx.json()
        jwk = body.get("key")
        if not isinstance(jwk, dict):
            raise bad_parameter("Property key is required and must be a JSON Web Key")
        reject_release_policy(body)
        hsm = body.get("Hsm")
        if hsm is not None and not isinstance(hsm, bool):
            raise bad_parameter("Property Hsm has invalid value")
        kty = jwk.get("kty")
        if kty in ("oct", "oct-HSM"):
            raise bad_parameter(f"Invalid kty value: {kty}", "KeyTypeNotSupported")
        if kty not in KEY_TYPES:
            raise bad_parameter(f"Invalid kty value: {kty}")
        self._check_key_name_free(name)
        key = crypto.private_key_from_jwk(jwk)
        family = kty.removesuffix("-HSM")
        ops = parse_key_ops(jwk.get("key_ops"), family)
        if hsm and not kty.endswith("-HSM"):
            kty = f"{family}-HSM"
        return self._add_key(ctx, name, key, kty, ops, body)

    def get_key(self, ctx: Ctx, name: str, version: str = "") -> dict:
        entry, rec = self.store.get("keys", name, version)
        return render_key(ctx, name, rec, bool(entry.get("managed")))

    def update_key(self, ctx: Ctx, name: str, version: str) -> dict:
        body = ctx.json()
        reject_release_policy(body)
        _, current = self.store.get("keys", name, version)
        changes: dict = {"attributes": parse_attributes(body)}
        if "key_ops" in body:
            changes["key_ops"] = parse_key_ops(body["key_ops"], current["kty"].removesuffix("-HSM"))
        if "tags" in body:
            changes["tags"] = parse_tags(body)
        rec = self.store.update("keys", name, version, changes)
        return render_key(ctx, name, rec, self.store.is_managed("keys", name))

    def _usable_key(self, name: str, version: str, op: str) -> tuple[dict, crypto.PrivateKey]:
        _, rec = self.store.get("keys", name, version)
        if not rec["attributes"].get("enabled", True):
            raise forbidden(f"Operation {op} is not allowed on a disabled key.", "KeyDisabled")
        if op not in rec["key_ops"]:
            raise forbidden(f"Operation {op} is not permitted on this key.", "KeyOperationForbidden")
        return rec, crypto.private_key_from_pem(rec["private_pem"])

    def sign(self, ctx: Ctx, name: str, version: str) -> dict:
        body = ctx.json()
        rec, key = self._usable_key(name, version, "sign")
        kid = object_id(ctx, "keys", name, rec["version"])
        digest = crypto.b64url_decode(body.get("value"), "value")
        signature = crypto.sign_digest(key, body.get("alg"), digest, kid)
        return {"kid": kid, "value": crypto.b64url_encode(signature)}

    def verify(self, ctx: Ctx, name: str, version: str) -> dict:
        body = ctx.json()
        rec, key = self._usable_key(name, version, "verify")
        kid = object_id(ctx, "keys", name, rec["version"])
        digest = crypto.b64url_decode(body.get("digest"), "digest")
        signature = crypto.b64url_decode(body.get("value"), "value")
        return {"value": crypto.verify_digest(key, body.get("alg"), digest, signature, kid)}

    # certificates --------------------------------------------------------------------------------------

    def import_certificate(self, ctx: Ctx, name: str) -> dict:
        body = ctx.json()
        policy_in = body.get("policy")
        if policy_in is not None and not isinstance(policy_in, dict):
            raise bad_parameter("Property policy has invalid value")
        policy_in = policy_in or {}
        secret_props = policy_in.get("secret_props") or {}
        key_props = policy_in.get("key_props") or {}
        if not isinstance(secret_props, dict) or not isinstance(key_props, dict):
            raise bad_parameter("Property policy has invalid value")
        if key_props.get("exportable") is not None and not isinstance(key_props["exportable"], bool):
            raise bad_parameter("Property policy.key_props.exportable has invalid value")
        tags = parse_tags(body)
        attrs_in = parse_attributes(body)
        for collection in ("keys", "secrets"):
            if self.store.exists(collection, name) and not self.store.is_managed(collection, name):
                raise conflict(
                    f"A {collection[:-1]} named {name} that does not belong to a certificate already exists; "
                    "a certificate of that name cannot be imported"
                )
        imported = certs.parse_import(body.get("value"), body.get("pwd"), secret_props.get("contentType"))

        version = new_version()
        nbf, exp = certs.validity(imported.leaf)
        attrs = base_attributes({"nbf": nbf, "exp": exp, **attrs_in})
        policy = certs.build_policy(imported, policy_in, attrs["created"])
        exportable = policy["key_props"]["exportable"]
        key = imported.private_key
        cert_rec = {
            "version": version,
            "cer": certs.der_b64(imported.leaf),
            "x5t": certs.thumbprint(imported.leaf),
            "policy": policy,
            "tags": tags,
            "attributes": dict(attrs),
        }
        key_rec = {
            "version": version,
            "kty": policy["key_props"]["kty"],
            "key_ops": crypto.default_ops(crypto.key_family(key)),
            "public_jwk": crypto.public_jwk(key),
            "private_pem": crypto.private_key_to_pem(key),
            "tags": tags,
            "attributes": dict(attrs),
        }
        secret_rec = {
            "version": version,
            "value": certs.secret_value(imported, exportable, name),
            "contentType": imported.content_type,
            "tags": tags,
            "attributes": dict(attrs),
        }
        self.store.add_versions(
            {"certificates": (name, cert_rec), "keys": (name, key_rec), "secrets": (name, secret_rec)}, managed=True
        )
        return render_certificate(ctx, name, cert_rec, policy=True)

    def get_certificate(self, ctx: Ctx, name: str, version: str = "") -> dict:
        # Like the service, the policy comes with the latest certificate, not with a named version.
        _, rec = self.store.get("certificates", name, version)
        return render_certificate(ctx, name, rec, policy=not version)

    def get_certificate_policy(self, ctx: Ctx, name: str) -> dict:
        _, rec = self.store.get("certificates", name)
        return render_policy(ctx, name, rec["policy"])

    def update_certificate(self, ctx: Ctx, name: str, version: str) -> dict:
        body = ctx.json()
        changes: dict = {"attributes": parse_attributes(body)}
        if "tags" in body:
            changes["tags"] = parse_tags(body)
        rec = self.store.update("certificates", name, version, changes)
        return render_certificate(ctx, name, rec, policy=True)

    # shared: lists, delete, recover, purge --------------------------------------------------------------

    def list_objects(self, ctx: Ctx, collection: str) -> dict:
        items = [
            item_of(ctx, collection, n, rec, bool(e.get("managed")), False)
            for n, e, rec in self.store.names(collection)
        ]
        return paginate(ctx, items)

    def list_versions(self, ctx: Ctx, collection: str, name: str) -> dict:
        managed = self.store.is_managed(collection, name)
        items = [item_of(ctx, collection, name, rec, managed, True) for rec in self.store.versions(collection, name)]
        return paginate(ctx, items)

    def delete(self, ctx: Ctx, collection: str, name: str) -> dict:
        if collection != "certificates" and self.store.is_managed(collection, name):
            raise forbidden(
                f"{collection[:-1].capitalize()} {name} belongs to certificate {name}; delete the certificate instead"
            )
        cascade = ("keys", "secrets") if collection == "certificates" else ()
        entry = self.store.delete(collection, name, cascade)
        return render_deleted(ctx, collection, name, entry)

    def get_deleted(self, ctx: Ctx, collection: str, name: str) -> dict:
        return render_deleted(ctx, collection, name, self.store.get_deleted(collection, name))

    def list_deleted(self, ctx: Ctx, collection: str) -> dict:
        items = []
        for name, entry in self.store.deleted_entries(collection):
            d = render_deleted(ctx, collection, name, entry)
            item = {k: v for k, v in d.items() if k not in ("value", "cer", "policy", "key")}
            if collection == "keys":
                item["kid"] = d["key"]["kid"]
            items.append(item)
        return paginate(ctx, items)

    def purge(self, ctx: Ctx, collection: str, name: str) -> None:
        self.store.purge(collection, name)

    def recover(self, ctx: Ctx, collection: str, name: str) -> dict:
        entry = self.store.recover(collection, name)
        rec = entry["versions"][entry["order"][-1]]
        managed = bool(entry.get("managed"))
        if collection == "secrets":
            return render_secret(ctx, name, rec, managed, value=False)
        if collection == "keys":
            return render_key(ctx, name, rec, managed)
        return render_certificate(ctx, name, rec, policy=True)


# --- routing -----------------------------------------------------------------------------------------------

Handler = Callable[..., dict | None]


def unsupported(what: str) -> KeyVaultError:
    return bad_parameter(f"{what} is not supported by the local Key Vault emulator")


def route(vault: Vault, method: str, segments: list[str]) -> tuple[Handler, tuple]:
    """Map (method, path segments) to a handler; an empty version segment means "latest", as in Key Vault."""
    if not segments or not segments[0]:
        raise KeyVaultError(404, "NotFound", "The requested resource was not found")
    head, rest = segments[0].lower(), segments[1:]
    n = len(rest)
    collections = {"secrets": "secrets", "keys": "keys", "certificates": "certificates"}
    deleted = {"deletedsecrets": "secrets", "deletedkeys": "keys", "deletedcertificates": "certificates"}

    if head in collections:
        coll = collections[head]
        if n == 0:
            if method == "GET":
                return vault.list_objects, (coll,)
            raise _method_not_allowed(method)
        name = rest[0]
        if (n == 1 and method == "POST" and name.lower() == "restore") or (
            coll == "certificates" and name.lower() in ("contacts", "issuers")
        ):
            raise unsupported(f"{head}/{name}")
        check_name(name)
        if n == 1:
            if method == "GET":
                return _getter(vault, coll), (name, "")
            if method == "DELETE":
                return vault.delete, (coll, name)
            if method == "PUT" and coll == "secrets":
                return vault.set_secret, (name,)
            if method == "PUT" and coll == "keys":
                return vault.import_key, (name,)
            raise _method_not_allowed(method)
        sub = rest[1]
        if n == 2:
            lowered = sub.lower()
            if lowered == "versions":
                if method == "GET":
                    return vault.list_versions, (coll, name)
                raise _method_not_allowed(method)
            if coll == "keys" and lowered == "create" and method == "POST":
                return vault.create_key, (name,)
            if coll == "certificates" and lowered == "import" and method == "POST":
                return vault.import_certificate, (name,)
            if coll == "certificates" and lowered == "policy":
                if method == "GET":
                    return vault.get_certificate_policy, (name,)
                raise unsupported("Updating a certificate policy")
            if lowered in ("backup", "rotate", "rotationpolicy", "create", "pending"):
                raise unsupported(f"{head}/{{name}}/{sub}")
            check_version(sub)
            if method == "GET":
                return _getter(vault, coll), (name, sub)
            if method == "PATCH":
                return _updater(vault, coll), (name, sub)
            raise _method_not_allowed(method)
        if coll == "keys" and n == 3 and method == "POST":
            check_version(sub)
            op = rest[2].lower()
            if op == "sign":
                return vault.sign, (name, sub)
            if op == "verify":
                return vault.verify, (name, sub)
            if op in UNSUPPORTED_KEY_OPS:
                raise unsupported(f"The {rest[2]} operation")
        if coll == "certificates" and n >= 3 and sub.lower() == "pending":
            raise unsupported("Certificate operations (create/merge)")
        raise KeyVaultError(404, "NotFound", "The requested resource was not found")

    if head in deleted:
        coll = deleted[head]
        if n == 0:
            if method == "GET":
                return vault.list_deleted, (coll,)
            raise _method_not_allowed(method)
        name = check_name(rest[0])
        if n == 1:
            if method == "GET":
                return vault.get_deleted, (coll, name)
            if method == "DELETE":
                return vault.purge, (coll, name)
            raise _method_not_allowed(method)
        if n == 2 and rest[1].lower() == "recover" and method == "POST":
            return vault.recover, (coll, name)
    if head == "rng":
        raise unsupported("rng")
    raise KeyVaultError(404, "NotFound", "The requested resource was not found")


def _getter(vault: Vault, coll: str) -> Handler:
    return {"secrets": vault.get_secret, "keys": vault.get_key, "certificates": vault.get_certificate}[coll]


def _updater(vault: Vault, coll: str) -> Handler:
    return {"secrets": vault.update_secret, "keys": vault.update_key, "certificates": vault.update_certificate}[coll]


def _method_not_allowed(method: str) -> KeyVaultError:
    return KeyVaultError(405, "MethodNotAllowed", f"The requested resource does not support http method '{method}'.")


def path_segments(path: str) -> list[str]:
    """'/keys/k//sign' -> ['keys', 'k', '', 'sign']; a trailing '/' after a name means the empty version."""
    segments = path.split("/")[1:]
    if len(segments) == 2 and segments[1] == "":
        segments = segments[:1]  # '/secrets/' is the collection
    return segments


# --- the ASGI app ------------------------------------------------------------------------------------------


def create_app(state_dir: Path, identity_signing_key: bytes, tenant_id: str = LOCAL_TENANT_ID,
               faults: FaultEngine | None = None) -> Starlette:
    """The emulator for one vault whose objects persist under state_dir/keyvault.

    faults: a fault engine (local/faults.py); by default the one LOCAL_FAULT_PROFILE names, if any.

    Tokens must come from the local managed identity (signed with identity_signing_key) for audience
    https://vault.azure.net, as Key Vault requires of Entra ID tokens.
    """
    vault = Vault(VaultStore(Path(state_dir)))
    challenge = challenge_header(tenant_id)

    def error_response(err: KeyVaultError) -> JSONResponse:
        headers = {"WWW-Authenticate": challenge} if err.status == 401 else {}
        return reply(err.body(), err.status, headers)

    def authenticate(request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise KeyVaultError(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.")
        reason = verify_token(identity_signing_key, token.strip(), {VAULT_RESOURCE})
        if reason == "wrong audience":
            raise KeyVaultError(401, "Unauthorized", f"AKV10022: Invalid audience. Expected {VAULT_RESOURCE}.")
        if reason is not None:
            raise KeyVaultError(401, "Unauthorized", f"Invalid bearer token: {reason}.")

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise KeyVaultError(413, "RequestEntityTooLarge", "The request body is too large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise KeyVaultError(413, "RequestEntityTooLarge", "The request body is too large")
            chunks.append(chunk)
        return b"".join(chunks)

    async def endpoint(request: Request) -> Response:
        try:
            # Authentication comes first: the SDK's first request is a body-less probe for the challenge.
            authenticate(request)
            api_version = request.query_params.get("api-version")
            if not api_version:
                raise bad_parameter("The 'api-version' query parameter is missing")
            if api_version not in API_VERSIONS:
                raise bad_parameter(
                    f"The specified version ({api_version}) is not recognized. "
                    f"Consider using the latest supported version ({LATEST_API_VERSION})."
                )
            body = await read_body(request) if request.method in ("PUT", "POST", "PATCH") else b""
            handler, args = route(vault, request.method, path_segments(request.url.path))
            ctx = Ctx(
                vault=f"{request.url.scheme}://{request.url.netloc}",
                path=request.url.path,
                query=dict(request.query_params),
                raw_body=body,
                api_version=api_version,
            )
            result = await run_in_threadpool(handler, ctx, *args)
        except KeyVaultError as err:
            return error_response(err)
        except CryptoInputError as err:
            return error_response(bad_parameter(str(err)))
        except UnsupportedAlgorithm as err:  # e.g. a certificate whose key algorithm cryptography cannot load
            return error_response(bad_parameter(f"Unsupported algorithm: {err}"))
        if result is None:
            return Response(status_code=204, headers=_common_headers())
        return reply(result)

    methods = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"]
    app = Starlette(routes=[Route("/{path:path}", endpoint, methods=methods)])
    return install(app, faults if faults is not None else engine_from_environment("keyvault"))


def _common_headers() -> dict[str, str]:
    return {
        "x-ms-request-id": str(uuid.uuid4()),
        "x-ms-keyvault-service-version": "local-emulator",
        "Cache-Control": "no-cache",
    }


class _AsciiJSONResponse(JSONResponse):
    """ASCII-escaped JSON: any string a client stored (even a lone surrogate) renders instead of failing."""

    media_type = "application/json; charset=utf-8"

    def render(self, content: object) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def reply(body: dict, status: int = 200, headers: dict | None = None) -> JSONResponse:
    return _AsciiJSONResponse(body, status, headers={**_common_headers(), **(headers or {})})
