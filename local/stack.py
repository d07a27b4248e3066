"""The local stack: Azurite, the IoT Hub, Key Vault and DPS service API emulators, the seed, the Functions dev host.

`python -m local.stack run` starts everything, waits until /api/health answers 200, prints the endpoints
and keeps running until Ctrl-C or SIGTERM, then stops every child. State lives under .local/ and survives
restarts; `make reset` deletes it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from local import sql_faults, storage_proxy
from local.azurite import DEV_ACCOUNT, STACK_PORTS, AzuritePorts, port_open, start_azurite
from local.faults import ENV_PROFILE
from local.iothub.config import LOCAL_POLICIES
from local.secrets import stack_secret
from local.seed import data
from local.seed.pki import ensure_root_ca
from local.settings_file import (
    CRL_CONTAINER,
    DPS_SERVICE_PORT,
    HOST_PORT,
    IDENTITY_PORT,
    KEY_VAULT_PORT,
    stack_values,
    write_local_settings,
)
from local.tls import ensure_tls

REPO_ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = REPO_ROOT / ".local"
HEALTH_URL = f"http://127.0.0.1:{HOST_PORT}/api/health"
EVENT_GRID_URL = f"http://127.0.0.1:{HOST_PORT}/runtime/webhooks/EventGrid?functionName=on_device_created"
log = logging.getLogger("local.stack")


class StackError(RuntimeError):
    pass


def stack_ports(hubs: list[data.LocalHub]) -> dict[str, int]:
    ports = AzuritePorts()
    named = {"azurite-blob": ports.blob, "azurite-queue": ports.queue, "azurite-table": ports.table,
             "identity": IDENTITY_PORT, "keyvault": KEY_VAULT_PORT, "dps": DPS_SERVICE_PORT,
             "functions-host": HOST_PORT}
    named.update({h.name: h.port for h in hubs})
    return named


def health(timeout: float = 10) -> tuple[int, dict] | None:
    """(status, body) of /api/health, or None when the host does not answer."""
    try:
        with urllib.request.urlopen(HEALTH_URL, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            return exc.code, {}
    except (urllib.error.URLError, OSError, ValueError):
        return None


@dataclass
class Stack:
    """The whole local stack. Tests start one with their own state dir, settings file and extra settings."""

    state_dir: Path = STATE_DIR
    settings_path: Path = REPO_ROOT / "local.settings.json"
    hubs: list[data.LocalHub] = field(default_factory=lambda: list(data.HUBS))
    extra_settings: dict[str, str] = field(default_factory=dict)
    iothub_args: list[str] = field(default_factory=list)  # e.g. ["--units", "20"]: more than S1 x1 for demos
    children: dict[str, subprocess.Popen] = field(default_factory=dict)

    def _env(self, ca_bundle: Path) -> dict[str, str]:
        env = dict(os.environ)
        env["REQUESTS_CA_BUNDLE"] = str(ca_bundle)
        env["SSL_CERT_FILE"] = str(ca_bundle)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _spawn(self, name: str, args: list[str], env: dict[str, str], to_console: bool = False) -> None:
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        out = None if to_console else open(logs / f"{name}.log", "ab")
        self.children[name] = subprocess.Popen(
            [sys.executable, *args], cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
        )

    def restart(self, name: str) -> None:
        """Kill one child with its process group (a crashed instance: no graceful shutdown) and start it again
        with the same command line and environment, as the platform restarts a crashed process."""
        proc = self.children[name]
        args = list(proc.args)[1:]  # [python, -m, ...]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        self._spawn(name, args, self._env(ensure_tls(self.state_dir).ca_bundle))

    def _wait_ports(self, ports: dict[str, int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = dict(ports)
        while pending:
            pending = {n: p for n, p in pending.items() if not port_open(p)}
            for name, proc in self.children.items():
                if proc.poll() is not None:
                    raise StackError(f"{name} exited with code {proc.returncode}; see .local/logs/{name}.log")
            if pending and time.monotonic() > deadline:
                raise StackError(f"not listening after {timeout:g}s: {', '.join(pending)}")
            time.sleep(0.1)

    def start(self, host_to_console: bool = True, health_timeout: float = 60) -> dict:
        """Start every component; a start that fails half-way stops what it started before raising."""
        try:
            return self._start(host_to_console, health_timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, host_to_console: bool, health_timeout: float) -> dict:
        busy = [f"{name} ({port})" for name, port in stack_ports(self.hubs).items() if port_open(port)]
        if busy:
            raise StackError("ports already in use: " + ", ".join(busy)
                             + " (is a stack already running? `make stop` ends one started by `make demo`)")
        started = time.monotonic()
        tls = ensure_tls(self.state_dir)
        for name in ["identity-signing-key", "identity-header", "function-key-default", "function-master-key",
                     *(f"iothub-{h.name}-{policy}" for h in self.hubs for policy in LOCAL_POLICIES)]:
            stack_secret(self.state_dir, name)
        values = {**stack_values(self.state_dir, tls, self.hubs), **self.extra_settings}
        write_local_settings(self.settings_path, values)
        env = self._env(tls.ca_bundle)

        # Fault profile for what cannot be changed (issue 16): only when LOCAL_FAULT_PROFILE has a "storage" service
        # does Azurite move behind the TCP fault proxy (local/storage_proxy.py); otherwise the ports are as they were.
        azurite_ports, proxy_args = storage_proxy.stack_plan(os.environ.get(ENV_PROFILE), STACK_PORTS)
        # Blob over HTTPS with OAuth, so that the app can sign user delegation SAS (local/azurite.py).
        self.children["azurite"] = start_azurite(self.state_dir / "azurite", azurite_ports,
                                                 log_file=self.state_dir / "logs" / "azurite.log", tls=tls)
        if proxy_args:
            self._spawn("storage-proxy", proxy_args, env)
            self._wait_ports({"storage-proxy": STACK_PORTS.blob}, timeout=10)
        # The hubs authenticate devices by certificates that chain to the device PKI's root: make it before they
        # start (the seed reuses it), so that no device call meets a hub still waiting for its trust anchor.
        ensure_root_ca(self.state_dir / "pki")
        for hub in self.hubs:  # a process per hub: each emulator is one event loop, and hubs are independent
            self._spawn(hub.name, ["-m", "local.iothub", "--state-dir", str(self.state_dir),
                                   "--hub", f"{hub.name}={hub.port}", "--event-grid-url", EVENT_GRID_URL,
                                   *self.iothub_args], env)
        self._spawn("keyvault", ["-m", "local.keyvault", "--state-dir", str(self.state_dir),
                                 "--port", str(KEY_VAULT_PORT), "--identity-port", str(IDENTITY_PORT)], env)
        # The DPS service API emulator: individual enrollments under STATE_DIR/dps, which the DPS simulator reads;
        # it accepts the tokens of the identity endpoint above (the same stack signing key).
        self._spawn("dps", ["-m", "local.dps", "serve", "--state-dir", str(self.state_dir),
                            "--port", str(DPS_SERVICE_PORT)], env)
        self._wait_ports({"identity": IDENTITY_PORT, "keyvault": KEY_VAULT_PORT, "dps": DPS_SERVICE_PORT,
                          **{h.name: h.port for h in self.hubs}}, timeout=30)

        self._seed(values, tls.ca_bundle)
        # ... and only when it has an "sql" service, a lock on the SQLite file on its schedule (local/sql_faults.py).
        sql_args = sql_faults.stack_args(os.environ.get(ENV_PROFILE), values.get("SQL_CONNECTION_STRING", ""))
        if sql_args:
            self._spawn("sql-faults", sql_args, env)
        self._spawn("functions-host", ["-m", "local.host", "--app", "function_app:app", "--port", str(HOST_PORT),
                                       "--settings", str(self.settings_path), "--host-json", "host.json",
                                       "--state-dir", str(self.state_dir)], env, to_console=host_to_console)
        deadline = time.monotonic() + health_timeout
        while True:
            answer = health()
            if answer and answer[0] == 200:
                break
            host = self.children["functions-host"]
            if host.poll() is not None:
                raise StackError(f"the Functions host exited with code {host.returncode}")
            if time.monotonic() > deadline:
                raise StackError(f"/api/health not 200 after {health_timeout:g}s: {answer}")
            time.sleep(0.2)
        # Azurite publishes no events: a poller delivers BlobCreated for the templates container to the host's Event
        # Grid endpoint as a storage system topic would (local/blob_events.py).
        self._spawn("blob-events", ["-m", "local.blob_events", "--settings", str(self.settings_path)], env)
        log.info("stack healthy in %.1fs", time.monotonic() - started)
        return answer[1]

    def _seed(self, values: dict[str, str], ca_bundle: Path) -> None:
        from local.seed.seed import run_seed
        from shared.bootstrap import Services
        from shared.config import Settings

        # The seed acts as the app: azure-identity reads IDENTITY_ENDPOINT/HEADER from the environment itself.
        saved = dict(os.environ)
        os.environ.update(values)
        os.environ["REQUESTS_CA_BUNDLE"] = str(ca_bundle)
        try:
            services = Services(Settings())
            run_seed(services, self.state_dir, self.hubs)
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def stop(self) -> None:
        for proc in reversed(list(self.children.values())):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for name, proc in self.children.items():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in 10s; killing it", name)
                os.killpg(proc.pid, signal.SIGKILL)
        self.children.clear()

    def wait(self) -> int:
        """Block until a child exits (then report it) or a signal arrives."""
        while True:
            for name, proc in self.children.items():
                if proc.poll() is not None:
                    log.error("%s exited with code %s; stopping the stack", name, proc.returncode)
                    return 1
            time.sleep(0.5)


def print_endpoints(hubs: list[data.LocalHub]) -> None:
    rows = [
        ("Functions host", f"http://127.0.0.1:{HOST_PORT}/api/health"),
        ("Event Grid webhook", f"http://127.0.0.1:{HOST_PORT}/runtime/webhooks/EventGrid?functionName={{name}}"),
        ("Azurite (Blob/Queue/Table)", "https://127.0.0.1:10000 / http://127.0.0.1:10001 / 10002"),
        ("CRLs (anonymous GET)", f"https://127.0.0.1:10000/{DEV_ACCOUNT}/{CRL_CONTAINER}/{{ca name}}.crl"),
        *((f"IoT Hub {h.region} ({h.name})", f"https://{h.host_name}") for h in hubs),
        ("Key Vault", f"https://localhost:{KEY_VAULT_PORT}/"),
        ("DPS service API (enrollments)", f"https://localhost:{DPS_SERVICE_PORT}/  "
                                          "(list: python -m local.dps enrollments)"),
        ("Managed identity endpoint", f"http://127.0.0.1:{IDENTITY_PORT}/msi/token"),
        ("State", str(STATE_DIR)),
    ]
    width = max(len(r[0]) for r in rows)
    print("\nLocal stack is up:")
    for name, url in rows:
        print(f"  {name:<{width}}  {url}")
    print("\nCtrl-C stops it.", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.stack", description=__doc__)
    parser.add_argument("command", choices=["run"], help="run: start everything and stay in the foreground")
    parser.add_argument("--hubs-per-region", type=int, default=1, metavar="N",
                        help=f"IoT hub emulators per region, one process each (1-{data.MAX_HUBS_PER_REGION}; "
                             f"the first of each region on 8441-8443, the others from {data.EXTRA_HUB_PORT} up); each "
                             "gets its iot_hubs row and is listed in the app settings, so the webhook and DPS use it")
    args = parser.parse_args(argv)
    if not 1 <= args.hubs_per_region <= data.MAX_HUBS_PER_REGION:
        parser.error(f"--hubs-per-region must be from 1 to {data.MAX_HUBS_PER_REGION}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("azure").setLevel(logging.WARNING)  # the SDKs log every HTTP request at INFO
    stack = Stack(hubs=data.hubs(args.hubs_per_region))

    def _terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        stack.start()
        print_endpoints(stack.hubs)
        return stack.wait()
    except StackError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        # A second Ctrl-C or SIGTERM while stopping must not leave children behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        log.info("stack stopped")


if __name__ == "__main__":
    sys.exit(main())
