"""Where relying parties find a CA's CRL and certificate: the settings, the URLs, and the extensions every issued
certificate carries (RFC 5280 4.2.1.13 CRL Distribution Points, 4.2.2.1 Authority Information Access)."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from cert_lifecycle.authority import CaDirectory, CertificateIssuer
from cert_lifecycle.records import CertificateRecords
from cert_lifecycle.settings import LifecycleSettings, lifecycle_settings
from health.checks import crl_published
from local.azurite import connection_string
from local.seed.seed import SCHEMA, schema_statements
from shared.audit import AuditWriter
from shared.config import RegionalCa, SettingError, Settings
from shared.crl import CrlLocation, CrlMetadata, crl_metadata, key_identifier
from shared.sql import Database
from tests.pki_helpers import NOW, make_ca
from tests.unit.test_cert_crl import local_vault_sign
from tests.unit.test_crl_store import MemoryBlobStore


@pytest.mark.parametrize(("environ", "url"), [
    ({"STORAGE_CONNECTION_STRING": connection_string()}, "https://127.0.0.1:10000/devstoreaccount1/crl"),
    ({"STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true", "CRL_CONTAINER": "pki"},
     "http://127.0.0.1:10000/devstoreaccount1/pki"),
    ({"STORAGE_CONNECTION_STRING": "DefaultEndpointsProtocol=https;AccountName=stsensors;AccountKey=a2V5;"
                                   "EndpointSuffix=core.windows.net"}, "https://stsensors.blob.core.windows.net/crl"),
    ({"STORAGE_BLOB_URI": "https://stsensors.blob.core.windows.net/"}, "https://stsensors.blob.core.windows.net/crl"),
    ({"STORAGE_BLOB_URI": "https://x.blob.core.windows.net", "CRL_DISTRIBUTION_URL": "http://pki.example.com/crl/"},
     "http://pki.example.com/crl"),
])
def test_the_distribution_url_defaults_to_the_container_url(environ, url):
    assert Settings(environ).crl_distribution_url == url


@pytest.mark.parametrize("bad", ["ftp://pki.example.com/crl", "pki.example.com/crl", "http://x/crl?sv=token"])
def test_a_distribution_url_that_is_not_plain_http_names_the_setting(bad):
    with pytest.raises(SettingError, match="CRL_DISTRIBUTION_URL"):
        _ = Settings({"STORAGE_BLOB_URI": "https://x.blob.core.windows.net", "CRL_DISTRIBUTION_URL": bad}
                     ).crl_distribution_url


def test_lifecycle_settings_carry_the_location():
    settings = lifecycle_settings(Settings({"STORAGE_BLOB_URI": "https://x.blob.core.windows.net",
                                            "CRL_DISTRIBUTION_URL": "http://pki.example.com/crl"}))
    assert settings.crl_location == CrlLocation("crl", "http://pki.example.com/crl")
    assert LifecycleSettings().crl_location is None


def test_urls_name_the_ca_and_for_its_certificate_the_key():
    location = CrlLocation("crl", "http://pki.example.com/crl")
    assert location.crl_url("intermediate-ca-west") == "http://pki.example.com/crl/intermediate-ca-west.crl"
    assert location.ca_certificate_url("intermediate-ca-west", bytes.fromhex("0a1b2c3d4e5f60718293")) == \
        "http://pki.example.com/crl/intermediate-ca-west-0a1b2c3d4e5f6071.crt"


def test_every_issued_certificate_names_its_crl_and_the_certificate_of_its_signing_key(tmp_path):
    db = Database(f"Driver=SQLite3;Database={tmp_path / 'issue.db'}")
    for statement in schema_statements(SCHEMA.read_text()):
        db.execute(statement)
    db.execute("INSERT INTO facilities (facility_code, name, region, preferred_hub, manager_email, active) "
               "VALUES ('FAC03', 'Plant 3', 'west', 'hub', 'm@example.com', 1)")
    ca = make_ca("intermediate-ca-west", "west")
    signers = {"https://vault/keys/intermediate-ca-west/1": local_vault_sign(ca.key)}
    vault = SimpleNamespace(get_certificate=lambda name: SimpleNamespace(
        cer=ca.certificate.public_bytes(serialization.Encoding.DER), key_id=f"https://vault/keys/{name}/1"))
    directory = CaDirectory([RegionalCa("west", ca.name)], vault, signers.__getitem__)
    settings = LifecycleSettings(crl_distribution_url="http://pki.example.com/crl")
    issuer = CertificateIssuer(directory, CertificateRecords(db), AuditWriter(db), settings, now=lambda: NOW)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sensor-temp-FAC03-SN1")]))
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    certificate = issuer.issue(csr, actor="test").certificate
    db.close()

    cdp = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    assert not cdp.critical
    [point] = cdp.value
    assert [n.value for n in point.full_name] == ["http://pki.example.com/crl/intermediate-ca-west.crl"]
    assert point.crl_issuer is None and point.reasons is None  # one full CRL, issued by the certificate's issuer
    aia = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    assert not aia.critical
    [access] = aia.value
    assert access.access_method == AuthorityInformationAccessOID.CA_ISSUERS
    key_id = key_identifier(ca.certificate).hex()[:16]
    assert access.access_location.value == f"http://pki.example.com/crl/intermediate-ca-west-{key_id}.crt"
    aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == key_identifier(ca.certificate)


def test_crl_metadata_round_trips_and_tolerates_what_it_does_not_know():
    written = CrlMetadata("intermediate-ca-west", 7, 400, NOW, NOW + dt.timedelta(days=7))
    assert crl_metadata(written.to_metadata()) == written
    assert crl_metadata({"CrlNumber": "x", "nextupdate": "soon"}) == CrlMetadata(None, None, None, None, None)


def test_the_health_check_wants_a_crl_blob_in_date_for_each_ca():
    store = MemoryBlobStore()
    with pytest.raises(LookupError, match=r"intermediate-ca-west\.crl"):
        crl_published(store, "intermediate-ca-west", NOW)
    store.put("intermediate-ca-west.crl", b"der", CrlMetadata("w", 1, 0, NOW, NOW + dt.timedelta(days=1))
              .to_metadata())
    crl_published(store, "intermediate-ca-west", NOW)
    with pytest.raises(ValueError, match="nextUpdate"):
        crl_published(store, "intermediate-ca-west", NOW + dt.timedelta(days=2))
