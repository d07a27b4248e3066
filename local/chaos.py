"""`make chaos`: the reference rollout on a bad day (issue 16).

Starts a fresh local stack under .local/chaos/ with every stand-in under a fault profile (default bad-day:
local/fault_profiles/bad-day.json; LOCAL_FAULT_PROFILE reaches each process through its environment) and Event
Grid's retry schedule scaled down (LOCAL_EVENT_GRID_TIME_SCALE), runs the reference rollout
(local/fleet/scenario.py, used as a library) and, while it runs, kills the Functions host and starts it again, and
stops one hub for --hub-outage-s seconds (SIGSTOP: connections accepted, never answered, as a hung hub does; then
SIGCONT). It exits 0 only when:

- no sensor is lost: each one configured, or refused with a reason a user can act on (the scenario's verification);
- no revoked certificate was allocated: no `allocated` audit row names a certificate revoked before it;
- every twin is correct (template (+) overrides; the scenario's verification);
- every failed Event Grid delivery was retried until delivered or dead-lettered with a reason (the hubs' delivery
  counters, their outboxes empty, each dead-letter blob carrying deadLetterReason);
- nothing was written twice (the redelivery storm rewrote no twin).

The summary prints the faults injected by kind, per stand-in, the deliveries, and `lost N`.
Sizes: `--facilities 12 --per-facility 300` is the reference rollout; CI runs `--facilities 2 --per-facility 20`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import signal
import ssl
import sys
import threading
import time
import urllib.request

from local.faults import FAULT_KINDS, FaultSummary, profile_path
from local.stack import STATE_DIR, Stack, StackError, health, port_open

CHAOS_DIR = STATE_DIR / "chaos"
THROTTLE = ["--rate-multiplier", "50"]  # as `make demo`: the hubs' S1 throttles x50
EVENT_TIME_SCALE = "0.01"  # Event Grid's 10 s, 30 s, 1 min ... -> 0.1 s, 0.3 s, 0.6 s ...; 24 h -> 14.4 min
log = logging.getLogger("local.chaos")


class Chaos:
    """What is done to the running stack while the rollout runs, and what is read back from it afterwards."""

    def __init__(self, stack: Stack, host_kill_after_s: float, hub_outage_after_s: float, hub_outage_s: float,
                 hub: str):
        self.stack = stack
        self.host_kill_after_s = host_kill_after_s
        self.hub_outage_after_s = hub_outage_after_s
        self.hub_outage_s = hub_outage_s
        self.hub = hub
        self.events: list[str] = []
        self.power_on = threading.Event()  # set when the sensors start powering on: the timers count from then
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for target in (self._kill_host, self._stop_hub):
            thread = threading.Thread(target=target, name=target.__name__, daemon=True)
            thread.start()
            self._threads.append(thread)

    def join(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.hub_outage_s + 120)

    def _note(self, what: str) -> None:
        line = f"{dt.datetime.now().strftime('%H:%M:%S')} {what}"
        self.events.append(line)
        print(f"  chaos: {line}", flush=True)

    def _after(self, seconds: float) -> bool:
        """Wait for power-on to start, then `seconds`; False when the run ended first."""
        while not self.power_on.wait(0.2):
            if self._stop.is_set():
                return False
        return not self._stop.wait(seconds)

    def _kill_host(self) -> None:
        """SIGKILL the Functions host mid-rollout (no graceful shutdown: in-flight invocations are lost), then start
        it again with the same command line, as the platform restarts a crashed instance."""
        if not self._after(self.host_kill_after_s):
            return
        self.stack.restart("functions-host")  # the host and its worker processes, as a crashed instance
        self._note("Functions host killed (SIGKILL, with its workers) and started again")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            answer = health(timeout=2)
            if answer is not None and answer[0] == 200:
                self._note("Functions host restarted, /api/health 200")
                return
            time.sleep(0.5)
        self._note("Functions host NOT healthy 90 s after its restart")

    def _stop_hub(self) -> None:
        if not self._after(self.hub_outage_after_s):
            return
        process = self.stack.children[self.hub]
        os.killpg(process.pid, signal.SIGSTOP)
        self._note(f"hub {self.hub} stopped (SIGSTOP) for {self.hub_outage_s:g}s")
        time.sleep(self.hub_outage_s)
        os.killpg(process.pid, signal.SIGCONT)
        self._note(f"hub {self.hub} continued (SIGCONT)")


def harness_services(settings):
    """The Services of this process (the factory, DPS's hub link aside, the devices and the verifier), whose own hub
    and Key Vault calls carry `x-local-faults: exempt` (local/faults.py): the verifier reads what the product did
    under faults without being faulted itself. DPS's linked-hub calls (local/dps) are faulted as any other."""
    from functools import cached_property

    from local.faults import EXEMPT_HEADER
    from shared import keyvault
    from shared.bootstrap import Services
    from shared.iothub.clients import RegistryClients, registry_manager

    class HarnessServices(Services):
        @cached_property
        def registries(self) -> RegistryClients:
            def exempt(host: str):
                manager = registry_manager(self.settings, host, lambda: self.credential)
                manager.protocol._client.add_header(EXEMPT_HEADER, "exempt")
                return manager

            return RegistryClients(exempt)

        @cached_property
        def credential(self):
            from azure.identity import ManagedIdentityCredential

            from shared.credentials import APP_SERVICE_IDENTITY_OPTIONS

            return ManagedIdentityCredential(client_id=self.settings.managed_identity_client_id,
                                             headers={EXEMPT_HEADER: "exempt"}, **APP_SERVICE_IDENTITY_OPTIONS)

        @cached_property
        def certificates(self):
            return keyvault.certificate_client(self.settings, self.credential, {"headers": {EXEMPT_HEADER: "exempt"}})

    return HarnessServices(settings)


def _get_json(url: str, timeout: float = 10) -> dict:
    context = ssl.create_default_context(cafile=os.environ.get("REQUESTS_CA_BUNDLE"))
    with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
        return json.loads(response.read())


def stand_ins(stack: Stack) -> dict[str, str]:
    """The counters URL (GET /_faults, local/faults.py) of every faulted stand-in."""
    from local.settings_file import DPS_SERVICE_PORT, IDENTITY_PORT, KEY_VAULT_PORT

    urls = {hub.name: f"https://localhost:{hub.port}/_faults" for hub in stack.hubs}
    urls.update({"keyvault": f"https://localhost:{KEY_VAULT_PORT}/_faults",
                 "identity": f"http://127.0.0.1:{IDENTITY_PORT}/_faults",
                 "dps": f"https://localhost:{DPS_SERVICE_PORT}/_faults"})
    return urls


def wait_for_deliveries(stack: Stack, timeout_s: float) -> dict[str, dict]:
    """Each hub's delivery counters once its outbox is empty (every event delivered or dead-lettered), or at the
    timeout."""
    urls = {hub.name: f"https://localhost:{hub.port}/_faults" for hub in stack.hubs}
    deadline = time.monotonic() + timeout_s
    while True:
        events = {name: _get_json(url)["events"] for name, url in urls.items()}
        pending = sum(e["pending"]["delivery"] + e["pending"]["deadLetter"] for e in events.values())
        if pending == 0 or time.monotonic() > deadline:
            return events
        time.sleep(1)


def dead_letters(connection_string: str) -> list[dict]:
    """The dead-lettered events in Azurite's `eventgrid-deadletter` container (each blob a JSON array)."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.blob import BlobServiceClient

    container = BlobServiceClient.from_connection_string(connection_string).get_container_client(
        "eventgrid-deadletter")
    letters = []
    try:
        for blob in container.list_blobs():
            letters.extend(json.loads(container.download_blob(blob.name).readall()))
    except ResourceNotFoundError:
        return []
    return letters


def revoked_allocations(database) -> list[str]:
    """`allocated` audit rows whose certificate (issuer, serial in the row's details) was revoked before them."""
    revoked = {(r["issuer"], r["serial_number"].upper()): r["revoked_at"]
               for r in database.fetch_all("SELECT issuer, serial_number, revoked_at FROM revocations")}
    found = []
    for row in database.fetch_all("SELECT registration_id, at, details FROM provisioning_events "
                                  "WHERE outcome = 'allocated'"):
        try:
            details = json.loads(row["details"] or "{}")
        except ValueError:
            continue
        when = revoked.get((details.get("issuer"), str(details.get("serialNumber", "")).upper()))
        if when is not None and when <= row["at"]:
            found.append(f"{row['registration_id']} at {row['at']} (revoked {when})")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--facilities", type=int, default=12, help="plants (1-12, default 12)")
    parser.add_argument("--per-facility", type=int, default=300, help="sensors per plant (default 300)")
    parser.add_argument("--seed", type=int, default=2026, help="fleet plan seed")
    parser.add_argument("--workers", type=int, default=32, help="sensors powered on at the same time")
    parser.add_argument("--profile", default="bad-day", help="fault profile (local/fault_profiles/NAME.json)")
    parser.add_argument("--host-kill-after-s", type=float, default=None,
                        help="kill the Functions host this long after power-on starts (default: scaled to size)")
    parser.add_argument("--hub-outage-after-s", type=float, default=None,
                        help="stop one hub this long after power-on starts (default: scaled to size)")
    parser.add_argument("--hub-outage-s", type=float, default=30, help="how long the hub stays stopped (default 30)")
    parser.add_argument("--hub", default="west", help="the hub stopped (west, central, east)")
    parser.add_argument("--delivery-timeout-s", type=float, default=300,
                        help="after the rollout, how long to wait for every event to be delivered or dead-lettered")
    args = parser.parse_args(argv)
    if not 1 <= args.facilities <= 12 or args.per_facility < 3:
        parser.error("--facilities must be 1..12 and --per-facility at least 3")
    profile_path(args.profile)  # a bad name fails here, not in five child processes
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    if health(timeout=2) is not None or port_open(7071):
        print("a local stack is running: stop it first (chaos starts its own, with faults)", file=sys.stderr)
        return 2
    # Every child of the stack inherits these (local/stack.py passes os.environ on).
    os.environ["LOCAL_FAULT_PROFILE"] = args.profile
    os.environ["LOCAL_EVENT_GRID_TIME_SCALE"] = EVENT_TIME_SCALE
    size = args.facilities * args.per_facility
    # Seconds after the sensors start powering on (2 x 20 takes ~5 s without faults, 12 x 300 a minute or more).
    hub_after = args.hub_outage_after_s if args.hub_outage_after_s is not None else max(1.0, size / 400)
    host_kill_after = args.host_kill_after_s if args.host_kill_after_s is not None else max(2.0, size / 200)

    state_dir, settings_path = CHAOS_DIR, CHAOS_DIR / "local.settings.json"
    shutil.rmtree(state_dir, ignore_errors=True)
    stack = Stack(state_dir=state_dir, settings_path=settings_path, iothub_args=THROTTLE,
                  extra_settings={"CRL_CACHE_TTL_SECONDS": "2", "CERT_SUPERSEDED_GRACE_HOURS": "0",
                                  "FUNCTIONS_WORKER_PROCESS_COUNT": "2", "PYTHON_THREADPOOL_THREAD_COUNT": "8"})
    print(f"chaos: profile {args.profile}, {size} sensors in {args.facilities} plants; after power-on starts: "
          f"Functions host killed at +{host_kill_after:.0f}s, hub {args.hub} stopped at +{hub_after:.0f}s for "
          f"{args.hub_outage_s:g}s",
          flush=True)
    try:
        stack.start(host_to_console=False, health_timeout=120)
        return run(args, stack, host_kill_after, hub_after)
    except StackError as exc:
        print(f"chaos failed: {exc}", file=sys.stderr)
        return 1
    finally:
        for child in stack.children.values():  # a hub left stopped would not hear SIGTERM
            try:
                os.killpg(child.pid, signal.SIGCONT)
            except (ProcessLookupError, PermissionError):
                pass
        stack.stop()


def run(args, stack: Stack, host_kill_after: float, hub_after: float) -> int:
    from local.azurite import connection_string
    from local.fleet.scenario import Scenario, ScenarioOptions
    from shared.config import Settings

    values = json.loads(stack.settings_path.read_text())["Values"]
    os.environ.update(values)  # this process acts as DPS, the factory and the devices, with the app's settings
    services = harness_services(Settings())
    options = ScenarioOptions(facilities=args.facilities, per_facility=args.per_facility, seed=args.seed,
                              workers=args.workers, spill_devices=max(1, args.per_facility // 8),
                              configure_timeout_s=max(180, args.hub_outage_s * 4))
    if args.facilities < 9:  # the east hub's plants are FAC09-FAC12: no east sensors, nothing to spill over
        options.spill_hub = ""
    hub = next(h.name for h in stack.hubs if args.hub in h.name)
    chaos = Chaos(stack, host_kill_after, hub_after, args.hub_outage_s, hub)

    def on_phase(phase: str) -> None:  # the faults start with the rollout itself
        if phase == "power-on":
            chaos.power_on.set()

    options.on_phase = on_phase
    started = time.monotonic()
    chaos.start()
    try:
        result = Scenario(services, stack.state_dir, options).run()
    finally:
        chaos.join()
    rollout_s = time.monotonic() - started
    deliveries = wait_for_deliveries(stack, args.delivery_timeout_s)
    faults = FaultSummary()
    for name, url in stand_ins(stack).items():
        faults.add(name, _get_json(url))
    for name, events in deliveries.items():
        faults.add(f"{name} (Event Grid delivery)", events.get("faults") or {})
    letters = dead_letters(connection_string())
    revoked = revoked_allocations(services.database)

    failures = list(result.failures)
    configured = sum(1 for o in result.outcomes if o.status == "configured")
    refused = [o for o in result.outcomes if o.status != "configured"]
    lost_count = 0
    for failure in result.failures:
        if "sensors lost" in failure:
            lost_count = int(failure.split()[0])
    if revoked:
        failures.append(f"{len(revoked)} allocations of revoked certificates: {'; '.join(revoked[:3])}")
    pending = {n: e["pending"] for n, e in deliveries.items()
               if e["pending"]["delivery"] or e["pending"]["deadLetter"]}
    if pending:
        failures.append(f"events neither delivered nor dead-lettered after {args.delivery_timeout_s:g}s: {pending}")
    unexplained = [e.get("id") for e in letters if not e.get("deadLetterReason")]
    if unexplained:
        failures.append(f"{len(unexplained)} dead-lettered events without a reason")
    failed_attempts = sum(e.get("failedAttempts", 0) for e in deliveries.values())
    retried_ok = sum(e.get("deliveredAfterRetry", 0) for e in deliveries.values())
    dead = sum(e.get("deadLettered", 0) for e in deliveries.values())

    print(f"\nchaos summary ({args.profile}, {rollout_s:.0f}s rollout)")
    for line in chaos.events:
        print(f"  {line}")
    print(f"  {faults.line()}")
    for name, counters in faults.by_service.items():
        injected = counters.get("injected") or {}
        if injected:
            print(f"    {name:<40} " + ", ".join(f"{k} {injected[k]}" for k in FAULT_KINDS if injected.get(k)))
    print(f"  Event Grid: {failed_attempts} failed delivery attempts, {retried_ok} events delivered after a retry, "
          f"{dead} dead-lettered ({', '.join(sorted({e['deadLetterReason'] for e in letters})) or 'none'})")
    print(f"  sensors: {configured} configured, {len(refused)} refused "
          f"({', '.join(sorted({str(o.reason) for o in refused}))}), storm rewrites {result.storm.get('rewritten', 0)}")
    print(f"  revoked certificates allocated: {len(revoked)}")
    print(f"lost {lost_count}")
    if failures:
        print("\nCHAOS FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print("chaos passed: no sensor lost, no revoked certificate allocated, every twin correct, every failed "
          "delivery retried or dead-lettered with a reason, nothing written twice")
    return 0


if __name__ == "__main__":
    sys.exit(main())
