"""cli.settings: environment first, then the file's Values; and the stack's CA trusted whatever REQUESTS_CA_BUNDLE
says (the bug: a shell pointing REQUESTS_CA_BUNDLE at the system bundle made every emulator call fail TLS)."""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from pathlib import Path

import certifi
import pytest
import requests

from cli.settings import _write_once, load_settings, merged_bundle, read_values, trust_bundle
from local.tls import ensure_tls
from shared.config import SettingError

SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def settings_file(path: Path, values: dict) -> Path:
    path.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    return path


def test_the_environment_wins_and_the_file_fills_the_rest(tmp_path):
    env = {"KEY_VAULT_URL": "https://from-env/"}
    load_settings(settings_file(tmp_path / "s.json", {"KEY_VAULT_URL": "https://from-file/", "A": 1, "B": True}),
                  environ=env)
    assert env == {"KEY_VAULT_URL": "https://from-env/", "A": "1", "B": "true"}


def test_the_default_file_is_read_only_when_it_exists(tmp_path):
    env: dict[str, str] = {}
    assert load_settings(None, environ=env) is None and env == {}
    settings_file(Path("local.settings.json"), {"A": "x"})  # the current directory is tmp_path (conftest)
    assert load_settings(None, environ=env) == Path("local.settings.json") and env == {"A": "x"}


def test_a_missing_or_malformed_file_is_a_setting_error(tmp_path):
    with pytest.raises(SettingError, match="does not exist"):
        load_settings(tmp_path / "none.json", environ={})
    assert load_settings(tmp_path / "none.json", must_exist=False, environ={}) is None
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SettingError, match=r"bad\.json"):
        read_values(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text('{"Values": [1]}')
    with pytest.raises(SettingError, match="Values"):
        read_values(tmp_path / "list.json")


# -- trust ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stack_tls(tmp_path_factory):
    """The stack's TLS files (local CA, server certificate, certifi + local CA bundle), as `make run` makes them."""
    return ensure_tls(tmp_path_factory.mktemp("state"))


@pytest.fixture
def system_bundle(tmp_path) -> Path:
    """A bundle without the stack's CA, standing in for the machine's (a copy: tests must not write beside it)."""
    source = SYSTEM_BUNDLE if SYSTEM_BUNDLE.is_file() else Path(certifi.where())
    copy = tmp_path / "system" / "ca-certificates.crt"
    copy.parent.mkdir()
    copy.write_bytes(source.read_bytes())
    return copy


def test_the_file_bundle_is_merged_into_the_environment_bundle(stack_tls, system_bundle):
    env = {"REQUESTS_CA_BUNDLE": str(system_bundle), "SSL_CERT_FILE": str(system_bundle)}
    load_settings(settings_file(system_bundle.parent / "s.json", {"REQUESTS_CA_BUNDLE": str(stack_tls.ca_bundle)}),
                  environ=env)
    merged = Path(env["REQUESTS_CA_BUNDLE"])
    assert env["SSL_CERT_FILE"] == str(merged) and merged.parent == stack_tls.ca_bundle.parent
    content = merged.read_bytes()
    assert content.startswith(system_bundle.read_bytes().rstrip(b"\n"))
    assert content.count(stack_tls.ca_cert.read_bytes().strip()) == 1
    assert system_bundle.read_bytes() != content  # the environment's bundle itself is never touched
    again = {"REQUESTS_CA_BUNDLE": str(system_bundle)}
    assert trust_bundle(stack_tls.ca_bundle, again) == merged  # content-named: the same file, not a new one


def test_no_new_file_when_the_environment_trusts_the_stack_already(stack_tls):
    env = {"REQUESTS_CA_BUNDLE": str(stack_tls.ca_bundle)}
    assert trust_bundle(stack_tls.ca_bundle, env) == stack_tls.ca_bundle
    assert merged_bundle(stack_tls.ca_bundle, stack_tls.ca_cert) == stack_tls.ca_bundle
    assert env == {"REQUESTS_CA_BUNDLE": str(stack_tls.ca_bundle), "SSL_CERT_FILE": str(stack_tls.ca_bundle)}


def test_without_an_environment_bundle_the_file_bundle_is_used(stack_tls):
    env: dict[str, str] = {}
    trust_bundle(stack_tls.ca_bundle, env)
    assert env == {"REQUESTS_CA_BUNDLE": str(stack_tls.ca_bundle), "SSL_CERT_FILE": str(stack_tls.ca_bundle)}


def test_a_bundle_that_does_not_exist_leaves_trust_alone(tmp_path, system_bundle):
    env = {"REQUESTS_CA_BUNDLE": str(system_bundle)}
    assert trust_bundle(tmp_path / "gone" / "ca-bundle.pem", env) is None
    assert env == {"REQUESTS_CA_BUNDLE": str(system_bundle)}


def test_the_merged_bundle_goes_to_the_temp_directory_when_the_stack_directory_is_not_writable(tmp_path,
                                                                                            monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    written = _write_once(b"bundle", tmp_path / "no-such-folder")
    assert written.parent == tmp_path and written.read_bytes() == b"bundle"
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.fixture
def https_server(stack_tls):
    """An https server with the stack's server certificate, like the emulators."""
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(stack_tls.server_cert, stack_tls.server_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://localhost:{server.server_port}/"
    server.shutdown()


def test_requests_reach_the_stack_with_the_system_bundle_in_the_environment(stack_tls, system_bundle, https_server,
                                                                            monkeypatch, tmp_path):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(system_bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(system_bundle))
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(https_server, timeout=5)  # the bug, before the settings are loaded
    load_settings(settings_file(tmp_path / "s.json", {"REQUESTS_CA_BUNDLE": str(stack_tls.ca_bundle)}))
    assert requests.get(https_server, timeout=5).status_code == 200
    assert requests.get(https_server, timeout=5, verify=True).status_code == 200  # what azure-core and msrest do
