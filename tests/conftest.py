"""Fixtures shared by every test: a throwaway stack state dir, TLS trust for the emulators, Azurite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from local.azurite import AzuritePorts, connection_string, start_azurite
from local.serve import free_port
from local.tls import TlsFiles, ensure_tls


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory) -> Path:
    """A .local/-like state directory private to this test session."""
    return tmp_path_factory.mktemp("local-state")


@pytest.fixture(scope="session")
def tls(state_dir) -> TlsFiles:
    """The local CA and server certificate; requests (azure-core) trusts them for the whole session."""
    files = ensure_tls(state_dir)
    os.environ["REQUESTS_CA_BUNDLE"] = str(files.ca_bundle)
    os.environ["SSL_CERT_FILE"] = str(files.ca_bundle)
    return files


@pytest.fixture(scope="session")
def azurite(state_dir) -> str:
    """A real Azurite on free ports; yields its connection string."""
    ports = AzuritePorts(free_port(), free_port(), free_port())
    proc = start_azurite(state_dir / "azurite", ports, log_file=state_dir / "azurite.log")
    try:
        yield connection_string(ports)
    finally:
        proc.terminate()
        proc.wait(10)
