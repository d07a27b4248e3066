"""App settings and TLS trust for the operator CLI: the one place that reads a settings file.

Settings are those of the function app: the environment first, then the settings file's "Values" for what the
environment does not set, as Core Tools does with local.settings.json. Against a deployment, point --settings
at a file with that deployment's values (or set them in the environment) and `az login`: without an identity
endpoint shared.credentials picks DefaultAzureCredential.

Trust: the local stack's file names its CA bundle (certifi's roots + the stack's CA) in REQUESTS_CA_BUNDLE. A
shell often sets REQUESTS_CA_BUNDLE already (the system bundle, on corporate machines), and that bundle does not
hold the stack's CA, so keeping the environment's value would make every emulator call fail TLS. The CLI trusts
both: the environment's bundle plus the certificates of the file's bundle that it lacks, written once to a
content-named file beside the stack's bundle (.local/tls/cli-bundle-*.pem), and points REQUESTS_CA_BUNDLE
(requests, azure-core, msrest) and SSL_CERT_FILE (ssl, httpx) at it for this process only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

from shared.config import SettingError

log = logging.getLogger(__name__)

DEFAULT_FILE = Path("local.settings.json")
TRUST_VARIABLES = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
# What the environment trusts today, in the order requests consults it (then the ssl module's SSL_CERT_FILE).
_TRUSTED_NOW = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")
_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.DOTALL)


def settings_file(given: Path | None, must_exist: bool = True) -> Path | None:
    """The file to read: the one given, else ./local.settings.json when it exists, else none."""
    if given is None:
        return DEFAULT_FILE if DEFAULT_FILE.is_file() else None
    if given.is_file():
        return given
    if must_exist:
        raise SettingError(f"settings file {given} does not exist")
    return None


def read_values(path: Path) -> dict[str, str]:
    """The "Values" of a local.settings.json-shaped file, as strings."""
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SettingError(f"settings file {path}: {exc}") from None
    values = document.get("Values", {}) if isinstance(document, dict) else None
    if not isinstance(values, dict):
        raise SettingError(f"settings file {path}: \"Values\" must be an object")
    return {str(k): (json.dumps(v) if isinstance(v, bool) else str(v)) for k, v in values.items() if v is not None}


def load_settings(given: Path | None, must_exist: bool = True,
                  environ: MutableMapping[str, str] | None = None) -> Path | None:
    """Put the file's values into the environment under what is set there already; trust the file's CA bundle.
    Returns the file read (None: the environment alone)."""
    environ = os.environ if environ is None else environ
    path = settings_file(given, must_exist)
    if path is None:
        return None
    values = read_values(path)
    for key, value in values.items():
        if key not in TRUST_VARIABLES:
            environ.setdefault(key, value)
    bundle = values.get("REQUESTS_CA_BUNDLE")
    if bundle:
        trust_bundle(Path(bundle), environ)
    return path


def trust_bundle(bundle: Path, environ: MutableMapping[str, str]) -> Path | None:
    """Make this process trust bundle's certificates as well as what the environment trusts; the bundle used."""
    if not bundle.is_file():
        log.debug("CA bundle %s does not exist (stack never started?); trust left as it is", bundle)
        return None
    current = next((Path(environ[v]) for v in _TRUSTED_NOW if environ.get(v) and Path(environ[v]).is_file()), None)
    target = bundle if current is None else merged_bundle(current, bundle)
    for variable in TRUST_VARIABLES:
        environ[variable] = str(target)
    return target


def _certificates(pem: bytes) -> dict[bytes, bytes]:
    """The PEM certificates of a bundle: their base64 without whitespace (to compare) -> the block as written."""
    return {re.sub(rb"\s+", b"", m.group(1)): m.group(0) for m in _PEM_CERTIFICATE.finditer(pem)}


def merged_bundle(current: Path, extra: Path) -> Path:
    """current when it already holds every certificate of extra; else a file with current + what it lacks."""
    base = current.read_bytes()
    have = _certificates(base)
    missing = [block for key, block in _certificates(extra.read_bytes()).items() if key not in have]
    if not missing:
        return current
    return _write_once(base.rstrip(b"\n") + b"\n" + b"\n".join(missing) + b"\n", extra.parent)


def _write_once(content: bytes, directory: Path) -> Path:
    """content in a file named by its hash (so concurrent CLIs with different bundles never overwrite each other's),
    beside the stack's bundle, or in the temp directory when that is not writable."""
    name = f"cli-bundle-{hashlib.sha256(content).hexdigest()[:16]}.pem"
    for folder in (directory, Path(tempfile.gettempdir())):
        target = folder / name
        if target.is_file() and target.read_bytes() == content:
            return target
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        try:
            tmp.write_bytes(content)
            tmp.replace(target)
            return target
        except OSError as exc:
            log.debug("cannot write %s: %s", target, exc)
            tmp.unlink(missing_ok=True)
    raise SettingError(f"cannot write a CA bundle into {directory} or {tempfile.gettempdir()}")
