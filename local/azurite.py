"""Azurite, Microsoft's Storage emulator (npm, pinned in package.json): start it and name its endpoints.

The stack's Azurite serves Blob over HTTPS with `--oauth basic` (STACK_PORTS): Get User Delegation Key accepts only a
Microsoft Entra bearer token, and Azurite accepts bearer tokens only over HTTPS ("Authentication scheme Bearer is not
allowed with HTTP", dist/src/blob/authentication/BlobTokenAuthenticator.js), so the app can sign the user delegation SAS
through which sensors read their offloaded configurations (twin_setup/offload.py). Shared key (the connection string)
keeps working on the same endpoint. Blob runs as its own process (azurite-blob) beside azurite-queue and azurite-table,
which stay on plain HTTP, in one process group: stopping the group stops all three. The certificate is the stack's
server certificate (local/tls.py), trusted like the other emulators' through REQUESTS_CA_BUNDLE. Tests and benches
that start their own Azurite on free ports keep one plain-HTTP process unless they ask for blob_https.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from local.tls import TlsFiles

REPO_ROOT = Path(__file__).resolve().parent.parent
# Azurite's well-known development account (public, documented by Microsoft; not a secret).
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass(frozen=True)
class AzuritePorts:
    blob: int = 10000
    queue: int = 10001
    table: int = 10002
    blob_https: bool = False  # Blob over TLS with OAuth (start_azurite needs the TLS files)


# The stack's Azurite (local/stack.py): the fixed ports, Blob over HTTPS. connection_string() names it by default.
STACK_PORTS = AzuritePorts(blob_https=True)


def blob_endpoint(ports: AzuritePorts | None = None) -> str:
    ports = ports or STACK_PORTS
    return f"{'https' if ports.blob_https else 'http'}://127.0.0.1:{ports.blob}/{DEV_ACCOUNT}"


def connection_string(ports: AzuritePorts | None = None) -> str:
    """Explicit form of UseDevelopmentStorage=true, valid for any ports; by default the stack's Azurite (Blob over
    HTTPS). The SDKs take the explicit endpoints as they are (DefaultEndpointsProtocol only builds missing ones)."""
    ports = ports or STACK_PORTS
    return (
        f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
        f"BlobEndpoint={blob_endpoint(ports)};"
        f"QueueEndpoint=http://127.0.0.1:{ports.queue}/{DEV_ACCOUNT};"
        f"TableEndpoint=http://127.0.0.1:{ports.table}/{DEV_ACCOUNT};"
    )


def azurite_executable(name: str = "azurite") -> str:
    """name: azurite (all three services) or azurite-blob / azurite-queue / azurite-table (one each)."""
    local_bin = REPO_ROOT / "node_modules" / ".bin" / name
    if local_bin.exists():
        return str(local_bin)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError("Azurite is not installed: run `npm ci` in the repository (make does it)")
    return found


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def start_azurite(location: Path, ports: AzuritePorts, log_file: Path | None = None,
                  timeout: float = 30, tls: TlsFiles | None = None) -> subprocess.Popen:
    """Start Azurite bound to 127.0.0.1 with its data under location; return once all ports answer.
    With ports.blob_https, tls names the server certificate and key; the Popen returned is azurite-blob, the leader
    of the process group of the three services (os.killpg on its pid stops them all)."""
    location.mkdir(parents=True, exist_ok=True)
    if log_file:
        log_file.parent.mkdir(parents=True, exist_ok=True)
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL
    common = ["--silent", "--disableTelemetry", "--skipApiVersionCheck", "--location", str(location)]
    if not ports.blob_https:
        proc = subprocess.Popen(
            [azurite_executable(), *common,
             "--blobHost", "127.0.0.1", "--blobPort", str(ports.blob),
             "--queueHost", "127.0.0.1", "--queuePort", str(ports.queue),
             "--tableHost", "127.0.0.1", "--tablePort", str(ports.table)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        procs = [proc]
    else:
        if tls is None:
            raise ValueError("Blob over HTTPS needs the TLS files (local/tls.py ensure_tls)")
        blob = [azurite_executable("azurite-blob"), *common, "--blobHost", "127.0.0.1", "--blobPort", str(ports.blob),
                "--cert", str(tls.server_cert), "--key", str(tls.server_key), "--oauth", "basic"]
        others = [[azurite_executable(f"azurite-{service}"), *common, f"--{service}Host", "127.0.0.1",
                   f"--{service}Port", str(port)] for service, port in (("queue", ports.queue), ("table", ports.table))]
        # One shell starts queue and table in the background and becomes azurite-blob (exec): all three share its
        # new session's process group, which a Popen cannot join from outside (setpgid across sessions: EPERM).
        script = " ".join(f"{shlex.join(cmd)} &" for cmd in others) + f" exec {shlex.join(blob)}"
        proc = subprocess.Popen(["/bin/sh", "-c", script], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        procs = [proc]
    deadline = time.monotonic() + timeout
    while not all(port_open(p) for p in (ports.blob, ports.queue, ports.table)):
        exited = next((p for p in procs if p.poll() is not None), None)
        if exited is not None:
            _stop_group(proc)
            raise RuntimeError(f"Azurite exited with code {exited.returncode} (log: {log_file})")
        if time.monotonic() > deadline:
            _stop_group(proc)
            raise TimeoutError("Azurite did not open its ports in time")
        time.sleep(0.1)
    return proc


def _stop_group(leader: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        leader.wait(10)
