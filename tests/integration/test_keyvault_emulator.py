"""The Key Vault emulator driven by the production SDKs, unchanged, over TLS with the local managed identity.

What the product relies on is checked end to end: challenge auth, secrets with versions, non-exportable keys,
digest signing whose output verifies with `cryptography`, and certificate import whose key signs for the
certificate. Raw HTTP checks pin the wire contract (challenge header, error codes) the SDKs depend on.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import time

import httpx
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.identity import ManagedIdentityCredential
from azure.keyvault.certificates import CertificateClient, CertificateContentType, CertificatePolicy, KeyType
from azure.keyvault.keys import JsonWebKey, KeyClient, KeyCurveName
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from azure.keyvault.secrets import SecretClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from local.identity import identity_app, issue_token
from local.keyvault import create_app
from local.keyvault.crypto import raw_to_der
from local.serve import free_port, serve_in_thread

pytestmark = pytest.mark.integration

SIGNING_KEY = b"kv-emulator-test-signing-key-32b"
IDENTITY_HEADER = "kv-emulator-test-header"
API = "7.6"


@pytest.fixture(scope="module")
def kv_state(tmp_path_factory):
    return tmp_path_factory.mktemp("kv-state")


@pytest.fixture(scope="module")
def servers(tls, kv_state):
    vault = serve_in_thread(create_app(kv_state, SIGNING_KEY), free_port(), tls)
    identity = serve_in_thread(identity_app(SIGNING_KEY, IDENTITY_HEADER), free_port())
    yield {"url": f"https://localhost:{vault.port}", "identity_port": identity.port}
    vault.server.config.timeout_graceful_shutdown = 1  # CryptographyClients may still hold TLS keep-alives
    vault.stop()
    identity.stop()


@pytest.fixture
def vault_url(servers, monkeypatch):
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{servers['identity_port']}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
    return servers["url"]


@pytest.fixture
def credential(vault_url):
    with ManagedIdentityCredential() as cred:
        yield cred


@pytest.fixture
def secrets(vault_url, credential):
    with SecretClient(vault_url, credential, verify_challenge_resource=False) as client:
        yield client


@pytest.fixture
def keys(vault_url, credential):
    with KeyClient(vault_url, credential, verify_challenge_resource=False) as client:
        yield client


@pytest.fixture
def certificates(vault_url, credential):
    with CertificateClient(vault_url, credential, verify_challenge_resource=False) as client:
        yield client


@pytest.fixture
def http(vault_url, tls):
    """Raw HTTPS with a valid local managed identity token, for wire-level assertions."""
    token, _ = issue_token(SIGNING_KEY, "https://vault.azure.net")
    with httpx.Client(
        base_url=vault_url, verify=str(tls.ca_bundle), headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as client:
        yield client


def crypto_client(key_id_or_key, credential) -> CryptographyClient:
    return CryptographyClient(key_id_or_key, credential, verify_challenge_resource=False)


def ec_public_key(jwk) -> ec.EllipticCurvePublicKey:
    curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}[KeyCurveName(jwk.crv).value]
    return ec.EllipticCurvePublicNumbers(int.from_bytes(jwk.x, "big"), int.from_bytes(jwk.y, "big"), curve).public_key()


def rsa_public_key(jwk) -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(int.from_bytes(jwk.e, "big"), int.from_bytes(jwk.n, "big")).public_key()


def make_ca(common_name: str, key) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    algorithm = hashes.SHA384() if isinstance(key, ec.EllipticCurvePrivateKey) else hashes.SHA256()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, algorithm)
    )


def pkcs8(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


# --- secrets ---------------------------------------------------------------------------------------------


def test_secret_versions_content_type_and_tags(secrets):
    first = secrets.set_secret("crl-west", "v1")
    second = secrets.set_secret("crl-west", "v2", content_type="application/pkix-crl", tags={"crlNumber": "2"})
    assert first.properties.version != second.properties.version
    latest = secrets.get_secret("crl-west")
    assert (latest.value, latest.properties.version) == ("v2", second.properties.version)
    assert latest.properties.content_type == "application/pkix-crl"
    assert latest.properties.tags == {"crlNumber": "2"}
    assert latest.properties.created_on is not None and latest.properties.enabled is True
    assert secrets.get_secret("crl-west", first.properties.version).value == "v1"
    versions = {p.version for p in secrets.list_properties_of_secret_versions("crl-west")}
    assert versions == {first.properties.version, second.properties.version}
    assert "crl-west" in {p.name for p in secrets.list_properties_of_secrets()}


def test_unknown_secret_and_version_are_404(secrets):
    with pytest.raises(ResourceNotFoundError) as missing:
        secrets.get_secret("no-such-secret")
    assert missing.value.error.code == "SecretNotFound"
    secrets.set_secret("has-one-version", "x")
    with pytest.raises(ResourceNotFoundError):
        secrets.get_secret("has-one-version", "0" * 32)


def test_secret_soft_delete_recover_and_purge(secrets):
    secrets.set_secret("to-delete", "x")
    deleted = secrets.begin_delete_secret("to-delete", _polling_interval=0).result()
    assert deleted.recovery_id.endswith("/deletedsecrets/to-delete")
    with pytest.raises(ResourceNotFoundError):
        secrets.get_secret("to-delete")
    with pytest.raises(ResourceExistsError):  # Key Vault: deleted but recoverable names cannot be reused
        secrets.set_secret("to-delete", "y")
    secrets.begin_recover_deleted_secret("to-delete", _polling_interval=0).wait()
    assert secrets.get_secret("to-delete").value == "x"
    secrets.begin_delete_secret("to-delete", _polling_interval=0).wait()
    secrets.purge_deleted_secret("to-delete")
    assert secrets.set_secret("to-delete", "z").value == "z"


def test_list_pages_follow_next_link(secrets, http):
    for i in range(3):
        secrets.set_secret("paged", f"v{i}")
    page = http.get("/secrets/paged/versions", params={"api-version": API, "maxresults": 2}).json()
    assert len(page["value"]) == 2 and page["nextLink"]
    assert len(list(secrets.list_properties_of_secret_versions("paged", max_page_size=2))) == 3


# --- keys ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("curve", "algorithm", "hash_cls"),
    [
        (KeyCurveName.p_256, SignatureAlgorithm.es256, hashes.SHA256),
        (KeyCurveName.p_384, SignatureAlgorithm.es384, hashes.SHA384),
    ],
)
def test_ec_key_signs_digest_in_raw_r_s(keys, credential, curve, algorithm, hash_cls):
    key = keys.create_ec_key(f"ec-{curve.value.lower()}", curve=curve)
    assert key.key.d is None and key.key.key_ops == ["sign", "verify"]
    digest = hashes.Hash(hash_cls())
    digest.update(b"to be signed")
    digest = digest.finalize()
    result = crypto_client(key, credential).sign(algorithm, digest)
    size = 32 if curve == KeyCurveName.p_256 else 48
    assert len(result.signature) == 2 * size  # r||s, not DER
    assert result.key_id == key.id
    ec_public_key(key.key).verify(raw_to_der(result.signature), digest, ec.ECDSA(utils.Prehashed(hash_cls())))
    assert crypto_client(key, credential).verify(algorithm, digest, result.signature).is_valid


def test_rsa_key_signs_rs256_and_ps256(keys, credential):
    key = keys.create_rsa_key("rsa-signer", size=2048)
    public = rsa_public_key(key.key)
    digest = hashlib.sha256(b"tbs").digest()
    client = crypto_client(key, credential)
    rs = client.sign(SignatureAlgorithm.rs256, digest).signature
    public.verify(rs, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    ps = client.sign(SignatureAlgorithm.ps256, digest).signature
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    public.verify(ps, digest, pss, utils.Prehashed(hashes.SHA256()))


def test_unversioned_key_id_signs_with_latest_version(keys, credential, http):
    keys.create_ec_key("rotating", curve=KeyCurveName.p_256)
    latest = keys.create_ec_key("rotating", curve=KeyCurveName.p_256)
    vault = latest.properties.vault_url
    result = crypto_client(f"{vault}/keys/rotating", credential).sign(SignatureAlgorithm.es256, b"\x01" * 32)
    assert result.key_id == latest.id
    # the empty-version path the generated client builds when it has no version
    value = base64.urlsafe_b64encode(b"\x01" * 32).rstrip(b"=").decode()
    raw = http.post("/keys/rotating//sign", params={"api-version": API}, json={"alg": "ES256", "value": value})
    assert raw.status_code == 200 and raw.json()["kid"] == latest.id


def test_imported_jwk_is_non_exportable_and_signs(keys, credential, http):
    private = ec.generate_private_key(ec.SECP256R1())
    numbers = private.private_numbers()
    jwk = JsonWebKey(
        kty="EC",
        crv="P-256",
        key_ops=["sign", "verify"],
        d=numbers.private_value.to_bytes(32, "big"),
        x=numbers.public_numbers.x.to_bytes(32, "big"),
        y=numbers.public_numbers.y.to_bytes(32, "big"),
    )
    imported = keys.import_key("imported-ec", jwk)
    assert imported.key.d is None and imported.key.key_ops == ["sign", "verify"]
    raw = http.get("/keys/imported-ec/", params={"api-version": API}).json()
    assert set(raw["key"]) == {"kid", "kty", "key_ops", "crv", "x", "y"}
    assert raw["attributes"]["exportable"] is False
    digest = hashlib.sha256(b"imported").digest()
    signature = crypto_client(imported, credential).sign(SignatureAlgorithm.es256, digest).signature
    private.public_key().verify(raw_to_der(signature), digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))


def test_key_without_sign_operation_is_forbidden(keys, credential):
    key = keys.create_rsa_key("verify-only", size=2048, key_operations=["verify"])
    with pytest.raises(HttpResponseError) as refused:
        crypto_client(key, credential).sign(SignatureAlgorithm.rs256, b"\x00" * 32)
    assert refused.value.status_code == 403 and refused.value.error.code == "Forbidden"


# --- certificates ----------------------------------------------------------------------------------------


def test_certificate_import_pem_non_exportable(certificates, secrets, credential):
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_cert = make_ca("Intermediate CA West", ca_key)
    root_key = ec.generate_private_key(ec.SECP384R1())
    root_cert = make_ca("Root", root_key)
    pem = (
        pkcs8(ca_key)
        + ca_cert.public_bytes(serialization.Encoding.PEM)
        + root_cert.public_bytes(serialization.Encoding.PEM)
    )
    policy = CertificatePolicy(
        issuer_name="Unknown",
        subject="CN=Intermediate CA West",
        exportable=False,
        key_type=KeyType.ec,
        key_curve_name=KeyCurveName.p_384,
        content_type=CertificateContentType.pem,
    )
    imported = certificates.import_certificate("ca-west", pem, policy=policy, tags={"region": "west"})
    der = ca_cert.public_bytes(serialization.Encoding.DER)
    assert imported.cer == der
    assert imported.properties.x509_thumbprint == ca_cert.fingerprint(hashes.SHA1())  # noqa: S303
    assert imported.key_id.endswith(f"/keys/ca-west/{imported.properties.version}")
    assert imported.secret_id.endswith(f"/secrets/ca-west/{imported.properties.version}")

    fetched = certificates.get_certificate("ca-west")
    assert fetched.cer == der and fetched.properties.tags == {"region": "west"}
    assert fetched.policy.exportable is False and fetched.policy.content_type == CertificateContentType.pem
    assert fetched.policy.key_curve_name == KeyCurveName.p_384 and fetched.policy.subject == "CN=Intermediate CA West"
    assert certificates.get_certificate_version("ca-west", imported.properties.version).cer == der
    assert certificates.get_certificate_policy("ca-west").key_type == KeyType.ec
    assert fetched.properties.expires_on == ca_cert.not_valid_after_utc

    secret = secrets.get_secret("ca-west")  # non-exportable: the certificate chain only, never the key
    assert secret.properties.managed is True and secret.properties.key_id == imported.key_id
    assert "PRIVATE KEY" not in secret.value
    assert x509.load_pem_x509_certificates(secret.value.encode()) == [ca_cert, root_cert]

    tbs_digest = hashlib.sha384(b"tbs certificate bytes").digest()
    signature = crypto_client(imported.key_id, credential).sign(SignatureAlgorithm.es384, tbs_digest).signature
    ca_cert.public_key().verify(raw_to_der(signature), tbs_digest, ec.ECDSA(utils.Prehashed(hashes.SHA384())))


def test_certificate_import_pfx_rsa_and_reimport_adds_a_version(certificates, secrets, credential):
    key = rsa.generate_private_key(65537, 2048)
    cert = make_ca("RSA CA", key)
    pfx = pkcs12.serialize_key_and_certificates(b"rsa", key, cert, None, serialization.BestAvailableEncryption(b"pw"))
    # key_type is needed: the SDK drops key_props (and so exportable=False) when no other key property is set
    policy = CertificatePolicy(
        issuer_name="Unknown", exportable=False, key_type=KeyType.rsa, content_type=CertificateContentType.pkcs12
    )
    first = certificates.import_certificate("rsa-ca", pfx, password="pw", policy=policy)
    value = base64.b64decode(secrets.get_secret("rsa-ca").value)
    no_key, leaf, extra = pkcs12.load_key_and_certificates(value, None)
    assert no_key is None and [c for c in [leaf, *extra] if c is not None] == [cert]
    digest = hashlib.sha256(b"x").digest()
    signature = crypto_client(first.key_id, credential).sign(SignatureAlgorithm.rs256, digest).signature
    cert.public_key().verify(signature, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))

    second = certificates.import_certificate("rsa-ca", pfx, password="pw", policy=policy)
    assert second.properties.version != first.properties.version
    versions = {c.version for c in certificates.list_properties_of_certificate_versions("rsa-ca")}
    assert versions == {first.properties.version, second.properties.version}


def test_pem_import_needs_pkcs8_and_pem_content_type(certificates):
    key = ec.generate_private_key(ec.SECP256R1())
    cert_pem = make_ca("bad", key).public_bytes(serialization.Encoding.PEM)
    sec1 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    pem_policy = CertificatePolicy(issuer_name="Unknown", content_type=CertificateContentType.pem)
    with pytest.raises(HttpResponseError) as sec1_refused:
        certificates.import_certificate("bad-key", sec1 + cert_pem, policy=pem_policy)
    assert sec1_refused.value.status_code == 400 and sec1_refused.value.error.code == "BadParameter"
    with pytest.raises(HttpResponseError) as wrong_type:  # PEM content without a PEM policy is read as PFX
        certificates.import_certificate("bad-type", pkcs8(key) + cert_pem)
    assert wrong_type.value.status_code == 400
    with pytest.raises(ResourceNotFoundError) as missing:
        certificates.get_certificate("bad-key")
    assert missing.value.error.code == "CertificateNotFound"


# --- auth ------------------------------------------------------------------------------------------------


class _FixedToken:
    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes, **kwargs) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


def test_token_from_another_signer_is_refused(vault_url):
    forged, _ = issue_token(b"not-the-stack-signing-key-000000", "https://vault.azure.net")
    client = SecretClient(vault_url, _FixedToken(forged), verify_challenge_resource=False)
    with pytest.raises(ClientAuthenticationError) as refused:
        client.get_secret("crl-west")
    assert refused.value.status_code == 401


def test_challenge_and_token_errors_on_the_wire(vault_url, tls):
    with httpx.Client(base_url=vault_url, verify=str(tls.ca_bundle), timeout=10) as raw:
        probe = raw.put("/secrets/x", params={"api-version": API}, headers={"Content-Length": "0"})
        assert probe.status_code == 401
        challenge = probe.headers["www-authenticate"]
        assert challenge.startswith('Bearer authorization="https://login.microsoftonline.com/')
        assert challenge.endswith('", resource="https://vault.azure.net"')
        assert probe.json()["error"] == {
            "code": "Unauthorized",
            "message": "AKV10000: Request is missing a Bearer or PoP token.",
        }
        wrong_aud, _ = issue_token(SIGNING_KEY, "https://management.azure.com/.default")
        refused = raw.get("/secrets/x", params={"api-version": API}, headers={"Authorization": f"Bearer {wrong_aud}"})
        assert refused.status_code == 401 and refused.json()["error"]["message"].startswith("AKV10022")
        assert "www-authenticate" in refused.headers
        garbage = raw.get("/secrets/x", params={"api-version": API}, headers={"Authorization": "Bearer abc.def"})
        assert garbage.status_code == 401 and garbage.json()["error"]["code"] == "Unauthorized"


# --- bad input -------------------------------------------------------------------------------------------


def _error(response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def test_bad_input_answers_like_key_vault(http, keys):
    q = {"api-version": API}
    keys.create_ec_key("bad-input-ec", curve=KeyCurveName.p_256)
    keys.create_rsa_key("bad-input-rsa", size=2048)
    digest = base64.urlsafe_b64encode(b"\x00" * 32).rstrip(b"=").decode()
    cases = [
        (http.put("/secrets/s1", params=q, content=b"{not json"), (400, "BadParameter")),
        (http.put("/secrets/s1", params=q, content=b"[1, 2]"), (400, "BadParameter")),
        (http.put("/secrets/s1", params=q, json={"value": 5}), (400, "BadParameter")),
        (http.put("/secrets/bad_name", params=q, json={"value": "x"}), (400, "BadParameter")),
        (http.get("/secrets/s1", params={"api-version": "1.0"}), (400, "BadParameter")),
        (http.get("/secrets/s1"), (400, "BadParameter")),
        (http.get("/secrets/nope/", params=q), (404, "SecretNotFound")),
        (http.get("/keys/nope/", params=q), (404, "KeyNotFound")),
        (http.get("/certificates/nope/", params=q), (404, "CertificateNotFound")),
        (http.post("/keys/nope//sign", params=q, json={"alg": "ES256", "value": digest}), (404, "KeyNotFound")),
        (
            http.post("/keys/bad-input-ec//sign", params=q, json={"alg": "HS256", "value": digest}),
            (400, "BadParameter"),
        ),
        (
            http.post("/keys/bad-input-ec//sign", params=q, json={"alg": "ES384", "value": digest}),
            (400, "BadParameter"),
        ),
        (
            http.post("/keys/bad-input-rsa//sign", params=q, json={"alg": "ES256", "value": digest}),
            (400, "BadParameter"),
        ),
        (
            http.post("/keys/bad-input-ec//sign", params=q, json={"alg": "ES256", "value": "AAAA"}),
            (400, "BadParameter"),
        ),
        (http.post("/keys/bad-input-ec//sign", params=q, json={"alg": "ES256", "value": "!!"}), (400, "BadParameter")),
        (http.post("/keys/bad-input-ec//sign", params=q, content=b""), (400, "BadParameter")),
        (http.post("/keys/k/create", params=q, json={"kty": "oct"}), (400, "BadParameter")),
        (http.post("/keys/k/create", params=q, json={"kty": "RSA", "key_size": 1024}), (400, "BadParameter")),
        (http.post("/keys/k/create", params=q, json={"kty": "EC", "crv": "P-192"}), (400, "BadParameter")),
        (
            http.put("/keys/k", params=q, json={"key": {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}}),
            (400, "BadParameter"),
        ),
        (http.post("/certificates/c/import", params=q, json={"value": "not base64!"}), (400, "BadParameter")),
        (
            http.post("/certificates/c/import", params=q, json={"value": base64.b64encode(b"junk").decode()}),
            (400, "BadParameter"),
        ),
        (http.post("/keys/bad-input-ec//encrypt", params=q, json={}), (400, "BadParameter")),
        (http.get("/nothing-here", params=q), (404, "NotFound")),
    ]
    for response, expected in cases:
        assert _error(response) == expected, (response.request.method, response.request.url, response.text)
    rsa_sign = http.post("/keys/bad-input-rsa//sign", params=q, json={"alg": "RS256", "value": "AAAA"})
    assert "Invalid length of 'value': 3 bytes. RS256 requires 32 bytes" in rsa_sign.json()["error"]["message"]


# --- persistence -----------------------------------------------------------------------------------------


def test_state_survives_restart(tls, kv_state, servers, keys, credential):
    key = keys.create_ec_key("persistent", curve=KeyCurveName.p_256)
    state_file = kv_state / "keyvault" / "vault.json"
    assert state_file.stat().st_mode & 0o077 == 0
    assert "PRIVATE KEY" in state_file.read_text()  # the emulator's HSM
    restarted = serve_in_thread(create_app(kv_state, SIGNING_KEY), free_port(), tls)
    restarted.server.config.timeout_graceful_shutdown = 1
    try:
        url = f"https://localhost:{restarted.port}"
        with KeyClient(url, credential, verify_challenge_resource=False) as client:
            again = client.get_key("persistent", key.properties.version)
        assert again.key.x == key.key.x
        digest = hashlib.sha256(b"after restart").digest()
        with crypto_client(again, credential) as signer:
            signature = signer.sign(SignatureAlgorithm.es256, digest).signature
        ec_public_key(key.key).verify(raw_to_der(signature), digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    finally:
        restarted.stop()


def test_no_response_carries_private_key_material(http, keys, certificates):
    q = {"api-version": API}
    private = rsa.generate_private_key(65537, 2048)
    n = private.private_numbers()
    keys.import_key(
        "full-rsa-jwk",
        JsonWebKey(
            kty="RSA",
            n=n.public_numbers.n.to_bytes(256, "big"),
            e=b"\x01\x00\x01",
            d=n.d.to_bytes(256, "big"),
            p=n.p.to_bytes(128, "big"),
            q=n.q.to_bytes(128, "big"),
            dp=n.dmp1.to_bytes(128, "big"),
            dq=n.dmq1.to_bytes(128, "big"),
            qi=n.iqmp.to_bytes(128, "big"),
        ),
    )
    ca_key = ec.generate_private_key(ec.SECP256R1())
    policy = CertificatePolicy(
        issuer_name="Unknown", exportable=False, key_type=KeyType.ec, content_type=CertificateContentType.pem
    )
    certificates.import_certificate(
        "scan-ca", pkcs8(ca_key) + make_ca("scan", ca_key).public_bytes(serialization.Encoding.PEM), policy=policy
    )
    base = str(http.base_url).rstrip("/")
    bodies, link = [], f"{base}/keys?api-version={API}&maxresults=5"
    while link:
        page = http.get(link).json()
        bodies.append(page)
        for item in page["value"]:
            bodies.append(http.get(item["kid"].removeprefix(base) + "/", params=q).json())
            bodies.extend(http.get(item["kid"].removeprefix(base) + "/versions", params=q).json()["value"])
        link = page["nextLink"]
    bodies.append(http.get("/secrets/scan-ca/", params=q).json())
    bodies.append(http.get("/certificates/scan-ca/", params=q).json())
    bodies.append(http.delete("/keys/full-rsa-jwk", params=q).json())
    bodies.append(http.get("/deletedkeys/full-rsa-jwk", params=q).json())
    assert any(b.get("key", {}).get("kid", "").count("full-rsa-jwk") for b in bodies)
    for doc in bodies:
        flat = json.dumps(doc)
        assert "PRIVATE KEY" not in flat and "private_pem" not in flat
        items = doc["value"] if isinstance(doc.get("value"), list) else []
        for jwk in [doc.get("key", {})] + [v.get("key", {}) for v in items]:
            assert not {"d", "p", "q", "dp", "dq", "qi", "k", "key_hsm"} & set(jwk)


def test_cli_serves_vault_and_identity_from_stack_secrets(state_dir, tls, tmp_path, monkeypatch):
    """`python -m local.keyvault` serves both endpoints with keys from the state dir's stack secrets."""
    import shutil
    import socket
    import subprocess
    import sys

    from local.secrets import stack_secret

    cli_state = tmp_path / "cli-state"
    shutil.copytree(state_dir / "tls", cli_state / "tls")  # same local CA as the session's trust bundle
    port, identity_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "local.keyvault",
            "--state-dir",
            str(cli_state),
            "--port",
            str(port),
            "--identity-port",
            str(identity_port),
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        for p in (port, identity_port):
            while True:
                assert proc.poll() is None, proc.stderr.read().decode()
                try:
                    socket.create_connection(("127.0.0.1", p), timeout=0.5).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "emulator did not start"
                    time.sleep(0.1)
        monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{identity_port}/msi/token")
        monkeypatch.setenv("IDENTITY_HEADER", stack_secret(cli_state, "identity-header"))
        with SecretClient(
            f"https://localhost:{port}", ManagedIdentityCredential(), verify_challenge_resource=False
        ) as client:
            assert client.set_secret("from-cli", "ok").value == "ok"
        assert (cli_state / "keyvault" / "vault.json").exists()
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_ca_rotated_to_a_new_key_lists_both_versions_with_what_the_webhook_reads(certificates, credential):
    """allocation/trust.py trusts every current version of a CA: list_properties_of_certificate_versions (enabled,
    validity, created) and get_certificate_version (its certificate and key) as azure-keyvault-certificates calls
    them; disabling a version withdraws it."""
    name = "rotated-ca"
    policy = CertificatePolicy(issuer_name="Unknown", exportable=False, key_type=KeyType.ec,
                               content_type=CertificateContentType.pem)
    old_key, new_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    old_cert, new_cert = make_ca("Rotated CA", old_key), make_ca("Rotated CA", new_key)
    first = certificates.import_certificate(name, pkcs8(old_key) + old_cert.public_bytes(serialization.Encoding.PEM),
                                            policy=policy)
    second = certificates.import_certificate(name, pkcs8(new_key) + new_cert.public_bytes(serialization.Encoding.PEM),
                                             policy=policy)
    listed = {p.version: p for p in certificates.list_properties_of_certificate_versions(name)}
    assert set(listed) == {first.properties.version, second.properties.version}
    for version, cert in ((first.properties.version, old_cert), (second.properties.version, new_cert)):
        properties = listed[version]
        assert properties.enabled is True and properties.created_on is not None
        assert properties.not_before == cert.not_valid_before_utc.replace(microsecond=0)
        assert properties.expires_on == cert.not_valid_after_utc.replace(microsecond=0)
        found = certificates.get_certificate_version(name, version)
        assert x509.load_der_x509_certificate(bytes(found.cer)) == cert
        assert found.key_id.endswith(f"/keys/{name}/{version}")
    digest = hashlib.sha384(b"crl").digest()  # the old key still signs: devices and CRLs of it stay verifiable
    signature = crypto_client(first.key_id, credential).sign(SignatureAlgorithm.es384, digest).signature
    old_cert.public_key().verify(raw_to_der(signature), digest, ec.ECDSA(utils.Prehashed(hashes.SHA384())))
    assert x509.load_der_x509_certificate(bytes(certificates.get_certificate(name).cer)) == new_cert  # latest

    certificates.update_certificate_properties(name, first.properties.version, enabled=False)
    enabled = {p.version: p.enabled for p in certificates.list_properties_of_certificate_versions(name)}
    assert enabled == {first.properties.version: False, second.properties.version: True}
