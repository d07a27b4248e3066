"""The operator CLI against the whole local stack, run as operators run it: the console script in a subprocess,
from another directory, with REQUESTS_CA_BUNDLE pointing at the system bundle (the shell of many corporate
machines, where the old module entry points failed TLS). Then the same commands against endpoints that do not
answer: one line with a code on stderr, a non-zero exit, no traceback, within seconds.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import certifi
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from local.azurite import AzuritePorts, connection_string
from local.secrets import stack_secret
from local.seed import data
from local.serve import free_port
from tests.stack_helpers import BASE_URL, sign_headers

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
# The machine's bundle (Debian/Ubuntu), which lacks the stack's CA; certifi's where there is none.
SYSTEM_BUNDLE = next((p for p in ["/etc/ssl/certs/ca-certificates.crt"] if Path(p).is_file()), certifi.where())
CN = "sensor-temp-FAC03-SN77123"  # FAC03: west, preferred hub the west hub
WEST = data.HUBS[0].host_name
ERROR_LINE = re.compile(r"onboarding: error [a-z_]+: \S.*")
FAIL_FAST_S = 10  # measured: about 1 s for explain and 1.5 s for preview (see the report printed with -s)


def onboarding() -> list[str]:
    """The console script `make` installs; `python -m cli` when this venv has not installed the project."""
    script = Path(sys.executable).parent / "onboarding"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli"]


def shell_env(stack_values: dict[str, str]) -> dict[str, str]:
    """An operator's shell: none of the stack's settings, and REQUESTS_CA_BUNDLE at the system bundle."""
    env = {k: v for k, v in os.environ.items() if k not in stack_values}
    env.update(REQUESTS_CA_BUNDLE=SYSTEM_BUNDLE, SSL_CERT_FILE=SYSTEM_BUNDLE, PYTHONPATH=str(REPO))
    return env


def run(args: list[str], settings: Path, env: dict[str, str], cwd: Path,
        command: list[str] | None = None) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run([*(command or onboarding()), *args, "--settings", str(settings)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    return done, time.monotonic() - started


@pytest.fixture(scope="module")
def values(stack) -> dict[str, str]:
    return json.loads(stack.settings_path.read_text())["Values"]


@pytest.fixture(scope="module")
def device_pem(stack, tmp_path_factory) -> Path:
    """A certificate issued through the stack (POST /api/certificates/sign), the function key sent unquoted."""
    key = stack_secret(stack.state_dir, "function-key-default")
    private_key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CN)])).sign(private_key, hashes.SHA256()))
    request = urllib.request.Request(f"{BASE_URL}/api/certificates/sign?code={key}", method="POST",
                                     data=csr.public_bytes(serialization.Encoding.PEM), headers=sign_headers())
    with urllib.request.urlopen(request, timeout=30) as response:  # a key with "+" would be a 401 here
        certificate = json.loads(response.read())["certificate"]
    path = tmp_path_factory.mktemp("device") / "device.pem"
    path.write_text(certificate)
    return path


@pytest.fixture(scope="module")
def closed_settings(stack, values, tmp_path_factory) -> Path:
    """The stack's settings with every network endpoint moved to a port nothing listens on."""
    blob, queue, table, vault, hub, identity = (free_port() for _ in range(6))
    storage = connection_string(AzuritePorts(blob, queue, table))
    path = tmp_path_factory.mktemp("closed") / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": {
        **values, "AzureWebJobsStorage": storage, "STORAGE_CONNECTION_STRING": storage,
        "KEY_VAULT_URL": f"https://localhost:{vault}/", "IOT_HUB_HOSTNAMES": f"localhost:{hub}",
        "IOT_HUB_NAMES": f"iothub-closed=localhost:{hub}", "IDENTITY_ENDPOINT": f"http://127.0.0.1:{identity}/msi/token",
    }}))
    return path


def test_explain_with_a_certificate_from_the_stack_and_the_system_bundle_in_the_shell(stack, values, device_pem,
                                                                                       tmp_path):
    done, _ = run(["explain", CN, "--cert", str(device_pem), "--json"], stack.settings_path, shell_env(values),
                  tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["decision"]["hub"] == WEST and report["decision"]["rule"] == "preferred"
    assert report["certificate"]["source"] == "dps" and report["trust"]["ca"] == "intermediate-ca-west"
    assert {h["host"] for h in report["hubs"]} == {h.host_name for h in data.HUBS}
    text, _ = run(["explain", CN, "--cert", str(device_pem)], stack.settings_path, shell_env(values), tmp_path)
    assert text.returncode == 0 and f"decision     {WEST} (rule: preferred)" in text.stdout
    assert text.stderr == ""


def test_preview_with_the_system_bundle_in_the_shell(stack, values, tmp_path):
    done, _ = run(["preview", CN, "--json"], stack.settings_path, shell_env(values), tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["storage"] == "twin" and result["identity"]["facility"] == "FAC03"
    assert result["sources"]["alerts.high"] == "override FAC03/temperature"
    assert result["desired"]["onboarding"]["configurationHash"] == result["configurationHash"]
    assert {"telemetry", "alerts", "firmware", "diagnostics"} <= set(result["desired"])


def test_the_old_module_entry_point_is_the_same_command(stack, values, device_pem):
    done, _ = run([CN, "--cert", str(device_pem)], stack.settings_path, shell_env(values), REPO,
                  command=[sys.executable, "-m", "allocation.explain"])
    assert done.returncode == 0, done.stderr
    assert f"decision     {WEST} (rule: preferred)" in done.stdout


@pytest.mark.parametrize("args", [["explain", CN, "--cert", "{cert}"], ["preview", CN]], ids=["explain", "preview"])
def test_endpoints_that_do_not_answer_give_one_line_with_a_code_quickly(closed_settings, values, device_pem, tmp_path,
                                                                        args):
    args = [a.replace("{cert}", str(device_pem)) for a in args]
    done, elapsed = run(args, closed_settings, shell_env(values), tmp_path)
    print(f"\n{args[0]} against closed ports: exit {done.returncode} after {elapsed:.2f} s: {done.stderr.strip()}")
    assert done.returncode != 0
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and ERROR_LINE.fullmatch(lines[0]), done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert elapsed < FAIL_FAST_S
