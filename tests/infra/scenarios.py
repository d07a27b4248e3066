"""What the deploy.sh tests share: a test root CA and Key Vault's CSRs for --sign-with-root, the az command paths
the script contains (read from its text), and a set of runs against the fake that between them issue every one."""

from __future__ import annotations

import base64
import datetime as dt
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.infra.conftest import DEPLOY, FakeAzure, Run

REGIONS = ("west", "central", "east")

# `az` where the shell runs it: at the start of a line or after `$(`, `mutate`, `if`, `!`, `&&`, `||`. Not in the
# messages that name a command for the reader ('az login', "(az deployment sub what-if)").
AZ_CALL = re.compile(r"(?:^[ \t]*|\$\(|\bmutate\s+|\bif\s+|!\s*|&&\s*|\|\|\s*)az((?:\s+[a-z][a-z0-9-]*)+)",
                     re.MULTILINE)


def deploy_script_commands() -> set[str]:
    """The az command paths deploy.sh contains (`iot dps enrollment-group create`, `rest`, ...)."""
    text = re.sub(r"^\s*#.*$", "", DEPLOY.read_text(), flags=re.MULTILINE)
    return {" ".join(match.group(1).split()) for match in AZ_CALL.finditer(text)}


def root_ca(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Sensor Onboarding Root CA (test)")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA384()))
    cert_path, key_path = directory / "root.pem", directory / "root.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def real_csrs() -> dict[str, str]:
    """What Key Vault returns for a pending certificate: a base64 DER CSR of its non-exportable key."""
    csrs = {}
    for region in REGIONS:
        key = ec.generate_private_key(ec.SECP384R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Sensor Onboarding Intermediate CA {region}")])
        csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA384())
        csrs[f"intermediate-ca-{region}"] = base64.b64encode(csr.public_bytes(serialization.Encoding.DER)).decode()
    return csrs


def every_path(root: Path, functions: list[str]) -> list[Run]:
    """Runs that between them take every branch that issues an az command: a what-if, a first deployment behind
    the SQL firewall, and a second run as a service principal that finds a DPS certificate unverified and the
    enrollment groups pointing at an old webhook."""
    runs = []
    preview = FakeAzure(root / "what-if", functions)
    runs.append(preview.run("--what-if"))
    fake = FakeAzure(root / "deploy", functions)
    sign = ("--sign-with-root", *map(str, root_ca(fake.root)))
    fake.update(csr_b64=real_csrs(), sql_blocked_ip="203.0.113.7")
    runs.append(fake.run(*sign))
    state = fake.state
    state["dps_certs"]["intermediate-ca-west"] = False
    for group in state["enrollment_groups"].values():
        group["webhookUrl"] = group["webhookUrl"].replace("function-key-allocate", "old-key")
    fake.update(**state, principal_kind="servicePrincipal")
    runs.append(fake.run(*sign))
    return runs
