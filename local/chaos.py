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
- nothing was written twice (the redelivery storm rewrote no twin, and no configured sensor's desired properties
  are ahead of the version it applied);
- the host kill and the hub outage both fell inside the power-on (a run the faults missed proves nothing).

The verdict is a pure function of what was read back (Evidence -> verdict; tests/unit/test_chaos_verdict.py). The
summary prints the faults injected by kind, per stand-in, the deliveries, and `lost N`.
Sizes: `--facilities 12 --per-facility 300` is the reference rollout; CI runs `--facilities 2 --per-facility 20`
(the kill at +size/200 s, at least +2 s, and the outage at +size/400 s, at least +1 s, after power-on starts).
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
from dataclasses import dataclass, field

from local.faults import FAULT_KINDS, FaultSummary, profile_path
from local.stack import STATE_DIR, Stack, health, port_open

CHAOS_DIR = STATE_DIR / "chaos"
THROTTLE = ["--rate-multiplier", "50"]  # as `make demo`: the hubs' S1 throttles x50
EVENT_TIME_SCALE = "0.01"  # Event Grid's 10 s, 30 s, 1 min ... -> 0.1 s, 0.3 s, 0.6 s ...; 24 h -> 14.4 min
log = logging.getLogger("local.chaos")


class Chaos:
    """What is done to the running stack while the rollout runs: the Functions host killed, one hub stopped."""

    def __init__(self, stack: Stack, host_kill_after_s: float, hub_outage_after_s: float, hub_outage_s: float,
                 hub: str):
        self.stack = stack
        self.host_kill_after_s = host_kill_after_s
        self.hub_outage_after_s = hub_outage_after_s
        self.hub_outage_s = hub_outage_s
        self.hub = hub
        self.events: list[str] = []
        self.at: dict[str, float] = {}  # what was done (DONE keys) -> seconds after power-on started
        self.power_on_started: float | None = None
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

    def _note(self, what: str, done: str | None = None) -> None:
        if done is not None and self.power_on_started is not None:
            self.at[done] = time.monotonic() - self.power_on_started
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
        killed = time.monotonic()
        self.stack.restart("functions-host")  # the host and its worker processes, as a crashed instance
        self._note("Functions host killed (SIGKILL, with its workers) and started again", "host killed")
        deadline = killed + 90
        while time.monotonic() < deadline:
            # Any answer means the host is back; /api/health is 503 while a dependency (the stopped hub) is down.
            answer = health(timeout=2)
            if answer is not None:
                self._note(f"Functions host answering again {time.monotonic() - killed:.1f}s after the kill "
                           f"(/api/health {answer[0]})", "host back")
                return
            time.sleep(0.5)
        self._note("Functions host NOT answering 90 s after its restart")

    def _stop_hub(self) -> None:
        if not self._after(self.hub_outage_after_s):
            return
        process = self.stack.children[self.hub]
        os.killpg(process.pid, signal.SIGSTOP)
        self._note(f"hub {self.hub} stopped (SIGSTOP) for {self.hub_outage_s:g}s", "hub stopped")
        time.sleep(self.hub_outage_s)
        os.killpg(process.pid, signal.SIGCONT)
        self._note(f"hub {self.hub} continued (SIGCONT)", "hub continued")


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


def configuration_rewrites(services, outcomes) -> list[str]:
    """Configured sensors whose desired properties were written again after they applied them: the twin's desired
    $version ahead of the version the sensor reported applying (reported.configuration.desiredVersion). A
    redelivered DeviceCreated event (the host killed mid-invocation, Event Grid's retries) must not write again."""
    from concurrent.futures import ThreadPoolExecutor

    hubs = services.iothub()

    def check(outcome) -> str | None:
        twin = hubs.get_twin(outcome.hub, outcome.device.device_id)
        if twin is None:
            return f"{outcome.device.device_id}: no twin in {outcome.hub}"
        applied = (twin.reported.get("configuration") or {}).get("desiredVersion")
        if applied != twin.desired_version:
            return f"{outcome.device.device_id}: desired v{twin.desired_version}, applied v{applied}"
        return None

    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="rewrites") as pool:
        found = pool.map(check, [o for o in outcomes if o.status == "configured"])
        return [line for line in found if line]


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
    args.started = time.monotonic()
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
        try:
            stack.start(host_to_console=False, health_timeout=120)
        except (RuntimeError, OSError) as exc:  # StackError, or Azurite that would not start
            print(f"chaos failed: the stack did not start: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        return run(args, stack, host_kill_after, hub_after)
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
            chaos.power_on_started = time.monotonic()
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
    rewritten = configuration_rewrites(services, result.outcomes)

    evidence = Evidence(
        outcomes=[(o.device.device_id, o.status, o.reason) for o in result.outcomes],
        expected_refusals={result.incidents["revoked"].split(":")[0]: "enrollment_disabled",
                           result.incidents["unknownFacility"]: "unknown_facility"},
        twins_wrong=len(result.configuration_errors), storm_rewritten=result.storm.get("rewritten", 0),
        configurations_rewritten=rewritten,
        revoked_allocations=revoked,
        pending_deliveries={n: e["pending"] for n, e in deliveries.items()},
        dead_lettered=sum(e.get("deadLettered", 0) for e in deliveries.values()),
        dead_letter_blobs=len(letters),
        dead_letters_without_reason=sum(1 for e in letters if not e.get("deadLetterReason")),
        dropped_events=sum(e.get("dropped", 0) for e in deliveries.values()),
        scenario_failures=list(result.failures),
        chaos_done=dict(chaos.at), power_on_s=result.phases.get("power-on", 0.0))
    lost, failures = verdict(evidence)
    configured = sum(1 for o in result.outcomes if o.status == "configured")
    refused = [o for o in result.outcomes if o.status != "configured" and o.device.device_id not in lost]
    failed_attempts = sum(e.get("failedAttempts", 0) for e in deliveries.values())
    retried_ok = sum(e.get("deliveredAfterRetry", 0) for e in deliveries.values())
    delivered = sum(e.get("delivered", 0) for e in deliveries.values())

    print(f"\nchaos summary ({args.profile}, {len(result.outcomes)} sensors; rollout {rollout_s:.0f}s, "
          f"whole run {time.monotonic() - args.started:.0f}s)")
    print("  phases: " + ", ".join(f"{name} {seconds:.0f}s" for name, seconds in result.phases.items()))
    for line in chaos.events:
        print(f"  {line}")
    print(f"  {faults.line()}")
    for name, counters in faults.by_service.items():
        injected = counters.get("injected") or {}
        if injected:
            print(f"    {name:<40} " + ", ".join(f"{k} {injected[k]}" for k in FAULT_KINDS if injected.get(k)))
    print(f"  Event Grid: {delivered} events delivered, {failed_attempts} failed delivery attempts, "
          f"{retried_ok} events delivered after a retry, {evidence.dead_lettered} dead-lettered "
          f"({', '.join(sorted({e['deadLetterReason'] for e in letters if e.get('deadLetterReason')})) or 'none'})")
    print(f"  sensors: {configured} configured, {len(refused)} refused "
          f"({', '.join(sorted(f'{o.device.device_id} {o.reason}' for o in refused)) or 'none'}), "
          f"twins wrong {evidence.twins_wrong}, configurations written twice {len(rewritten)} "
          f"(storm rewrites {evidence.storm_rewritten})")
    again = [o.registrations for o in result.outcomes if o.registrations > 1]
    print(f"  DPS registrations retried by the sensors (a transient failure): {len(again)} sensors, "
          f"{sum(again) - len(again)} retries")
    print(f"  revoked certificates allocated: {len(revoked)}")
    print(f"lost {len(lost)}")
    if failures:
        print("\nCHAOS FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print("chaos passed: no sensor lost, no revoked certificate allocated, every twin correct, every failed "
          "delivery retried or dead-lettered with a reason, nothing written twice")
    return 0


@dataclass
class Evidence:
    """What a chaos run read back from the stack, as plain values: the verdict below decides on these alone."""

    outcomes: list[tuple[str, str, str | None]]  # (device id, status, reason) of every sensor powered on
    expected_refusals: dict[str, str]  # the incidents: device id -> the reason it must be refused with
    twins_wrong: int = 0  # configured twins that differ from template (+) overrides
    storm_rewritten: int = 0  # twins written again by the redelivery storm
    configurations_rewritten: list[str] = field(default_factory=list)  # written again after the sensor applied them
    revoked_allocations: list[str] = field(default_factory=list)
    pending_deliveries: dict[str, dict] = field(default_factory=dict)  # hub -> {"delivery": n, "deadLetter": n}
    dead_lettered: int = 0  # the hubs' count of events dead-lettered
    dead_letter_blobs: int = 0  # dead-lettered events found in the dead-letter container
    dead_letters_without_reason: int = 0
    dropped_events: int = 0  # events the hubs gave up on without a dead letter
    scenario_failures: list[str] = field(default_factory=list)  # the scenario's own verification
    chaos_done: dict[str, float] = field(default_factory=dict)  # Chaos.at: what was done, when after power-on began
    power_on_s: float = 0.0  # how long the power-on (the rollout proper) took


def verdict(evidence: Evidence) -> tuple[list[str], list[str]]:
    """(lost sensors, failures): the run passes only when failures is empty.

    Lost: a sensor neither configured nor refused with the reason its incident expects (a refusal a user can act
    on: the revoked one by DPS, the unknown plant's by the webhook)."""
    lost = [device_id for device_id, status, reason in evidence.outcomes
            if status != "configured" and evidence.expected_refusals.get(device_id, object()) != reason]
    failures = [f for f in evidence.scenario_failures if "sensors lost" not in f]  # counted below, on its own
    done = evidence.chaos_done
    for what in ("host killed", "hub stopped"):  # a run the faults missed proves nothing
        if what not in done or done[what] > evidence.power_on_s:
            when = f"at +{done[what]:.0f}s" if what in done else "never"
            failures.append(f"not exercised: {what} during the rollout (power-on took {evidence.power_on_s:.0f}s; "
                            f"{what} {when})")
    for what in ("host back", "hub continued"):
        if what not in done:
            failures.append(f"{what}: never (see the chaos lines above)")
    if lost:
        reasons = {device_id: f"{status} ({reason})" for device_id, status, reason in evidence.outcomes}
        failures.append(f"{len(lost)} sensors lost: " + ", ".join(f"{d} {reasons[d]}" for d in lost[:5]))
    if evidence.revoked_allocations:
        failures.append(f"{len(evidence.revoked_allocations)} allocations of revoked certificates: "
                        + "; ".join(evidence.revoked_allocations[:3]))
    if evidence.twins_wrong and not any("twins differ" in f for f in failures):
        failures.append(f"{evidence.twins_wrong} twins differ from template (+) overrides")
    if evidence.storm_rewritten and not any("storm rewrote" in f for f in failures):
        failures.append(f"redelivery storm rewrote {evidence.storm_rewritten} twins")
    if evidence.configurations_rewritten:
        failures.append(f"{len(evidence.configurations_rewritten)} configurations written again after the sensor "
                        "applied them: " + "; ".join(evidence.configurations_rewritten[:3]))
    pending = {hub: p for hub, p in evidence.pending_deliveries.items() if p.get("delivery") or p.get("deadLetter")}
    if pending:
        failures.append(f"events neither delivered nor dead-lettered: {pending}")
    if evidence.dropped_events:
        failures.append(f"{evidence.dropped_events} events dropped without a dead letter")
    if evidence.dead_letter_blobs < evidence.dead_lettered:
        failures.append(f"{evidence.dead_lettered} events dead-lettered, {evidence.dead_letter_blobs} found in the "
                        "dead-letter container")
    if evidence.dead_letters_without_reason:
        failures.append(f"{evidence.dead_letters_without_reason} dead-lettered events without a reason")
    return lost, failures


if __name__ == "__main__":
    sys.exit(main())
