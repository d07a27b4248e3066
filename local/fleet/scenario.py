"""The reference rollout with its incidents, run through the real functions on the local stack.

1. plan the fleet (facilities x sensors, mixed types, gateways) and manufacture every sensor through sign_csr;
2. incidents prepared: one sensor's certificate revoked for cause before it is installed (through the revoke
   function, which also disallows it at DPS: a disabled individual enrollment); one sensor from a plant that
   is not registered (certificate from the regional CA, facility unknown to SQL); one hub given less capacity
   than its region needs, so the rest spills over;
3. power everything on at once; each sensor registers through DPS and waits until it runs its configuration;
4. an Event Grid redelivery storm: DeviceCreated events of configured sensors delivered again, three times,
   shuffled; no twin may be written again. Side by side, time travel: sensors whose certificates are due go
   through a renewal round;
   Side by side too, the onboarding funnel: every configured sensor sends its first reading after its warm-up,
   except a few silent ones (the incident: they apply their configuration and never send), and the funnel's
   reconciler (the onboarding_funnel timer) must record the others live and flag the silent ones stuck, in their
   manager's digest;
5. verification: every configured twin equals template (+) overrides (checked independently), the revoked
   sensor was refused by DPS itself (enrollment disabled, the webhook never asked) and the unknown one by the
   webhook, neither got a hub, the short hub held no more than its limit and its region's other sensors
   went elsewhere, the renewals completed, and no sensor was lost.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests
from cryptography import x509

from local.dps.enrollments import Enrollment
from local.dps.simulator import DpsSimulator
from local.dps.store import EnrollmentStore
from local.fleet.device import SimulatedSensor
from local.fleet.plan import PlannedDevice, plan_fleet
from local.fleet.rollout import FIRST_READING_DELAY_S, DeviceOutcome, Factory, Readings, onboard, run_parallel
from local.fleet.verify import ExpectedConfigurations, configuration_errors
from local.iothub.config import stack_connection_string
from local.secrets import stack_secret
from local.seed import data
from local.tls import ensure_tls
from shared.bootstrap import Services
from shared.identity import parse_device_id
from shared.times import sql_utc

BASE_URL = "http://127.0.0.1:7071"


@dataclass
class ScenarioOptions:
    facilities: int = 12
    per_facility: int = 300
    seed: int = 2026
    workers: int = 32
    configure_timeout_s: float = 120
    spill_hub: str = "localhost:8443"  # the east hub gets less room than its region needs
    spill_devices: int = 40
    silent_sensors: int = 3  # apply their configuration, never send telemetry: caught as stuck
    funnel_timeout_s: float = 240  # how long the funnel's record may take to settle after the rollout
    # A changed template uploaded mid power-on (local/fleet/template_change.py); DEMO_TEMPLATE_CHANGE=0 leaves it out
    # (to measure the demo without it).
    template_change: bool = field(default_factory=lambda: os.environ.get("DEMO_TEMPLATE_CHANGE", "1") != "0")
    on_phase: Callable[[str], None] | None = None  # told when a step starts ("power-on"): make chaos hooks in here


@dataclass
class ScenarioResult:
    outcomes: list[DeviceOutcome]
    wall_s: float
    configuration_errors: dict[str, list[str]] = field(default_factory=dict)
    incidents: dict[str, str] = field(default_factory=dict)
    storm: dict[str, int] = field(default_factory=dict)
    lifecycle: dict[str, int] = field(default_factory=dict)
    aged: list[DeviceOutcome] = field(default_factory=list)  # the time-travel cohort
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step, in order
    failures: list[str] = field(default_factory=list)  # verification failures: non-empty means exit 1
    revocation: dict = field(default_factory=dict)  # the revoke function's answer for the revoked incident
    funnel: dict = field(default_factory=dict)  # the funnel as the product recorded it (SQL, twins, the alerts queue)
    usage: dict = field(default_factory=dict)  # Azure operations per sensor, by step (local/fleet/usage.py)
    template_change: dict = field(default_factory=dict)  # the mid-run template change and the final drift check

    @property
    def manufacture_s(self) -> float:
        return self.phases.get("manufacture", 0.0)

    @property
    def onboarding_s(self) -> float:
        """Power-on of the first sensor to the last one configured (or refused): the rollout itself."""
        return self.phases.get("power-on", 0.0)

    @property
    def ok(self) -> bool:
        return not self.failures


class Scenario:
    def __init__(self, services: Services, state_dir: Path, options: ScenarioOptions):
        self.services = services
        self.state_dir = state_dir
        self.options = options
        self.function_key = stack_secret(state_dir, "function-key-default")
        self.master_key = stack_secret(state_dir, "function-master-key")
        self.hubs = services.settings.iot_hub_host_names
        names = dict(item.split("=", 1) for item in services.settings.get("IOT_HUB_NAMES", "").split(",") if item)
        self.hub_names = {host: name for name, host in names.items()}
        # What a sensor trusts for its hub's server certificate: the stack's own CA (cheap to load per device).
        self.hub_ca = str(ensure_tls(state_dir).ca_cert)
        self.factory = Factory(BASE_URL, self.function_key, self._factory_partner(), reissue=self._rework)
        self._spill_limit = self._spill_held = 0
        self._revoked_at = dt.datetime.now(dt.UTC)

    def _factory_partner(self) -> str:
        """The plant's manufacturing partner (docs/partners.md): registered in SQL for every facility, with room for
        any rollout; its Authorization value is a token the stack's identity endpoint issues."""
        from local.partners import create_local_partner

        _, authorization = create_local_partner(os.environ, "demo factory", daily_quota=1_000_000)
        return authorization

    def _rework(self, device_id: str) -> None:
        """The operator's re-issue (`onboarding certs reissue CN --reason rework`) for a device planned again."""
        from cert_lifecycle.partners import authorize_reissue
        from cert_lifecycle.wiring import Lifecycle

        lifecycle = self._lifecycle = getattr(self, "_lifecycle", None) or Lifecycle(self.services)
        authorize_reissue(device_id, "rework", "demo:operator", records=lifecycle.records,
                          revoker=lifecycle.revoker, audit=lifecycle.audit)

    # -- set-up -------------------------------------------------------------------------------------------
    def dps(self, gateways: list[SimulatedSensor]) -> DpsSimulator:
        root = x509.load_pem_x509_certificate((self.state_dir / "pki" / "root-ca.pem").read_bytes())
        webhook = f"{BASE_URL}/api/allocate"
        enrollments = []
        for region, ca_name in data.CA_NAMES.items():
            cer = self.services.certificates.get_certificate(ca_name).cer
            enrollments.append(Enrollment(f"sensors-{region}", x509.load_der_x509_certificate(bytes(cer)), self.hubs,
                                          webhook))
        for gateway in gateways:  # gateways are individually enrolled as IoT Edge devices
            enrollments.append(Enrollment(gateway.device_id, None, self.hubs, webhook,
                                          individual_certificate=gateway.certificate, iot_edge=True))
        links = {host: stack_connection_string(self.state_dir, self.hub_names[host], host) for host in self.hubs}
        # The individual enrollments the app writes through the DPS service API emulator (the stack's `dps`
        # process) count too, and before the groups, as in DPS: a revoked device's disabled enrollment refuses it.
        return DpsSimulator(enrollments, self.hubs, [root], links,
                            function_key=self.function_key,
                            state_file=self.state_dir / "dps" / "registrations.jsonl",
                            enrollment_store=EnrollmentStore(self.state_dir),
                            # DPS's retries of a 429/5xx answer (1 s, then 9 s more each), scaled down locally
                            retry_scale=float(os.environ.get("DPS_RETRY_SCALE", "0.01")))

    def revoke(self, sensor: SimulatedSensor) -> dict:
        """Revoke the sensor's certificate for cause as an operator would: the revoke function (admin key). The
        product records it, re-publishes the CRL, and disallows the device at DPS (its answer's disallowedAtDps)."""
        give_up = time.monotonic() + 120  # an operator tries again while the app restarts or answers 503
        while True:
            try:
                response = requests.post(f"{BASE_URL}/api/certificates/revoke", timeout=120,
                                         headers={"x-functions-key": self.master_key},
                                         json={"serialNumber": format(sensor.certificate.serial_number, "X"),
                                               "reason": "keyCompromise", "revokedBy": "make demo"})
            except requests.ConnectionError:
                if time.monotonic() > give_up:
                    raise
                time.sleep(2)
                continue
            if response.status_code not in (429, 503) or time.monotonic() > give_up:
                response.raise_for_status()
                return response.json()
            time.sleep(min(30.0, float(response.headers.get("Retry-After") or 5)))

    def limit_hub(self, host: str, planned_in_region: int) -> tuple[int, int]:
        """Give host room for all but spill_devices of its share of its region's sensors (the region's sensors over
        its hubs); returns (new, previous) limits."""
        present = self.hub_device_count(host)
        previous = self.services.database.fetch_one("SELECT max_devices FROM iot_hubs WHERE host_name = ?", [host])
        share = -(-planned_in_region // max(1, sum(1 for h in self.hubs if data.region_of(h) == data.region_of(host))))
        limit = max(1, present + share - self.options.spill_devices)
        self.services.database.execute("UPDATE iot_hubs SET max_devices = ? WHERE host_name = ?", [limit, host])
        return limit, int(previous["max_devices"]) if previous else limit

    def hub_device_count(self, host: str) -> int:
        return self.services.iothub().device_count(host)

    def restore_hub(self, host: str, limit: int) -> None:
        self.services.database.execute("UPDATE iot_hubs SET max_devices = ? WHERE host_name = ?", [limit, host])

    # -- certificate lifecycle ------------------------------------------------------------------------------
    def admin(self, function_name: str) -> None:
        """Run a non-HTTP function now (the daily timer, the hourly collector), as an operator would."""
        response = requests.post(f"{BASE_URL}/admin/functions/{function_name}", json={"input": ""}, timeout=30,
                                 headers={"x-functions-key": self.master_key})
        response.raise_for_status()

    def aged_stock(self, facilities: list[str], ages_days: tuple[int, ...] = (660, 715)
                   ) -> list[tuple[PlannedDevice, SimulatedSensor]]:
        """Sensors whose 2-year certificates were issued ages_days ago (time travel for the lifecycle): the real
        issuer (Key Vault signing, asset register, audit) with its clock set back."""
        from cert_lifecycle.authority import CertificateIssuer
        from cert_lifecycle.wiring import Lifecycle

        lifecycle = Lifecycle(self.services)
        now = dt.datetime.now(dt.UTC)
        cohort = []
        for facility in facilities:
            for age in ages_days:
                device = PlannedDevice(f"sensor-temp-{facility}-AGED{age}", facility, "temp")
                sensor = SimulatedSensor(device.device_id)
                issuer = CertificateIssuer(lifecycle.cas, lifecycle.records, lifecycle.audit, lifecycle.settings,
                                           now=lambda age=age: now - dt.timedelta(days=age))
                sensor.install_certificate(issuer.issue(sensor.csr_pem(), actor="demo:aged-stock").to_body())
                cohort.append((device, sensor))
        return cohort

    def _wait(self, condition, timeout_s: float, what: str, again: str | None = None, every_s: float = 15) -> bool:
        """Wait for condition; with again, run that timer function every every_s meanwhile, as its next run would
        (a run that met a fault leaves the rest to the next one: a bad day's reset of a Key Vault sign)."""
        deadline, next_run = time.monotonic() + timeout_s, time.monotonic() + every_s
        while time.monotonic() < deadline:
            if condition():
                return True
            if again is not None and time.monotonic() >= next_run:
                try:
                    self.admin(again)
                except requests.RequestException:  # the host restarting: the timer runs again later
                    pass
                next_run = time.monotonic() + every_s
            time.sleep(0.1)
        print(f"lifecycle: {what} did not complete within {timeout_s:g}s", file=sys.stderr)
        return False

    def renewal_round(self, cohort: list[DeviceOutcome], dps: DpsSimulator, timeout_s: float = 90) -> dict[str, int]:
        """Daily scan -> renewal queue -> request in desired -> device CSR -> collector signs -> device installs ->
        its hub refuses the new certificate ("unauthorized") -> the device registers with DPS again, which updates
        its identity -> it connects and reports -> the collector completes the renewal, having seen on the register
        that DPS provisioned it with the new certificate -> the old one is revoked as superseded (after the grace
        period). Microsoft's "How to roll X.509 device certificates"; docs/contracts.md 7.3."""
        hubs = self.services.iothub()

        def renewal(o: DeviceOutcome) -> dict:
            twin = hubs.get_twin(o.sensor.hub, o.device.device_id)  # the hub DPS assigned it last
            return {"status": (twin.desired.get("certificateRenewal") or {}).get("status"),
                    "state": (twin.tags.get("certificateRenewal") or {}).get("state")} if twin else {}

        self.admin("scan_expiring_certificates")
        requested = self._wait(lambda: all(renewal(o).get("status") == "requested" for o in cohort), timeout_s,
                               "requests")
        csrs = sum(1 for o in cohort if o.sensor.answer_renewal() == "csr")
        self.admin("collect_renewal_csrs")
        self._wait(lambda: all(renewal(o).get("status") == "issued" for o in cohort), timeout_s, "issuance",
                   again="collect_renewal_csrs")
        installed = sum(1 for o in cohort if o.sensor.answer_renewal() == "installed")
        rejoined = [o.sensor.rejoin(dps) for o in cohort]
        for o in cohort:
            o.sensor.release()
            o.hub = o.sensor.hub  # a sensor placed out of its region for lack of room goes home when it can
        self.admin("collect_renewal_csrs")
        self._wait(lambda: all(renewal(o).get("state") in ("completed", "closed") for o in cohort), timeout_s,
                   "completions", again="collect_renewal_csrs")
        old = [format(o.sensor.renewed_from.serial_number, "X") for o in cohort if o.sensor.renewed_from]

        def revoked_count() -> int:
            rows = self.services.database.fetch_all(
                "SELECT serial_number FROM revocations WHERE reason = 'superseded'")
            return len({r["serial_number"] for r in rows} & set(old))

        grace = float(self.services.settings.get("CERT_SUPERSEDED_GRACE_HOURS", "24") or 24)
        if grace == 0:
            self._wait(lambda: revoked_count() == len(old), timeout_s, "superseded revocations",
                       again="collect_renewal_csrs")
        far = dt.datetime.now(dt.UTC) + dt.timedelta(days=700)
        return {"agedSensors": len(cohort), "requested": len(cohort) if requested else 0, "csrs": csrs,
                "installed": installed,
                "refusedUnauthorized": sum(1 for r in rejoined if r["refused"]),
                "reprovisioned": sum(1 for r in rejoined if r["reprovisioned"]),
                "movedHub": sum(1 for r in rejoined if r["reprovisioned"] and not r.get("sameHub")),
                "connected": sum(1 for r in rejoined if r["connected"]),
                "completed": sum(1 for o in cohort if renewal(o).get("state") in ("completed", "closed")),
                "renewedTwoYears": sum(1 for o in cohort if o.sensor.certificate.not_valid_after_utc > far),
                "supersededRevoked": revoked_count(), "graceHours": int(grace)}

    # -- the storm ----------------------------------------------------------------------------------------
    def redelivery_storm(self, outcomes: list[DeviceOutcome], rounds: int = 3, sample: int = 200) -> dict[str, int]:
        """DeviceCreated events of configured sensors delivered again, `rounds` times each, shuffled and in
        concurrent batches as Event Grid retries arrive; returns how many twins were written again (must be 0)."""
        configured = [o for o in outcomes if o.status == "configured"][:sample]

        hubs = self.services.iothub()

        def desired_version(o: DeviceOutcome) -> int:
            return hubs.get_twin(o.hub, o.device.device_id).desired_version

        def event(o: DeviceOutcome) -> dict:
            twin = self.services.registry_manager(o.hub).get_twin(o.device.device_id)
            return {"id": f"storm-{o.device.device_id}", "topic": f"/SUBSCRIPTIONS/local/PROVIDERS/"
                    f"MICROSOFT.DEVICES/IOTHUBS/{self.hub_names[o.hub].upper()}",
                    "subject": f"devices/{o.device.device_id}",
                    "eventType": "Microsoft.Devices.DeviceCreated",
                    "eventTime": dt.datetime.now(dt.UTC).isoformat(), "dataVersion": "1", "metadataVersion": "1",
                    "data": {"hubName": self.hub_names[o.hub], "deviceId": o.device.device_id,
                             "twin": {"deviceId": o.device.device_id, "etag": twin.etag, "version": twin.version}}}

        url = f"{BASE_URL}/runtime/webhooks/EventGrid?functionName=on_device_created"

        def deliver(batch: list[dict]) -> None:
            # As Event Grid does: an answer of 429 or 5xx (twin setup could not finish within its deadline, e.g. a
            # hub faulted under `make chaos`) is delivered again after a pause, a few times, before it counts.
            for attempt in range(6):
                with requests.Session() as session:
                    session.trust_env = False
                    response = session.post(url, json=batch, timeout=120, headers={"aeg-event-type": "Notification"})
                if response.status_code != 429 and response.status_code < 500:
                    break
                time.sleep(min(8.0, 0.5 * 2 ** attempt))
            response.raise_for_status()

        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="storm") as pool:
            before = list(pool.map(desired_version, configured))
            batch = list(pool.map(event, configured)) * rounds
            random.Random(self.options.seed).shuffle(batch)
            list(pool.map(deliver, [batch[start:start + 50] for start in range(0, len(batch), 50)]))
            after = list(pool.map(desired_version, configured))
        rewritten = sum(1 for b, a in zip(before, after, strict=True) if a != b)
        return {"devices": len(configured), "deliveries": len(batch), "rewritten": rewritten}

    # -- the run ------------------------------------------------------------------------------------------
    def run(self) -> ScenarioResult:
        opts = self.options
        started = time.monotonic()
        phases: dict[str, float] = {}
        mark = [started]

        def lap(name: str) -> None:
            now = time.monotonic()
            phases[name], mark[0] = now - mark[0], now

        facilities = [f"FAC{n:02d}" for n in range(1, opts.facilities + 1)]
        plan = plan_fleet(facilities, opts.per_facility, opts.seed)
        sensors = {d.device_id: SimulatedSensor(d.device_id) for d in plan}
        lap("plan")

        run_parallel(plan, lambda d: self.factory.manufacture(sensors[d.device_id]), opts.workers, "manufacture")
        lap("manufacture")

        # incidents
        incidents = {}
        revoked = next(d for d in plan if not d.is_gateway)
        # Revoked for cause before installation: the revoke function disables it at DPS before it answers, so DPS
        # refuses the sensor whatever CRL the webhook holds (no wait for the webhook's CRL cache).
        self._revoked_at = dt.datetime.now(dt.UTC)
        revocation = self.revoke(sensors[revoked.device_id])
        incidents["revoked"] = revoked.device_id
        stranger = PlannedDevice(f"sensor-temp-FAC{opts.facilities + 90:02d}-SN00000001",
                                 f"FAC{opts.facilities + 90:02d}", "temp")
        sensors[stranger.device_id] = self._stranger(stranger.device_id)
        incidents["unknownFacility"] = stranger.device_id
        region_of = {f.code: f.region for f in data.facilities()}
        hub_region = {h.host_name: h.region for h in data.HUBS}
        previous_limit = None
        if opts.spill_hub in hub_region:
            in_region = sum(1 for d in plan if region_of.get(d.facility) == hub_region[opts.spill_hub])
            limit, previous_limit = self.limit_hub(opts.spill_hub, in_region)
            incidents["spillHubLimit"] = f"{opts.spill_hub} max_devices={limit}"
            self._spill_limit = limit

        silent = [d for d in plan if not d.is_gateway and d is not revoked][1:1 + opts.silent_sensors]
        for device in silent:
            sensors[device.device_id].silent = True
        if silent:
            incidents["silent"] = ", ".join(d.device_id for d in silent)
        readings = Readings()
        funnel_started = dt.datetime.now(dt.UTC)

        change = self._template_change(plan, sensors, {d.device_id for d in silent})
        change_at, powered = max(1, len(plan) // 3), itertools.count(1)

        def power_on(device: PlannedDevice) -> DeviceOutcome:
            outcome = onboard(device, sensors[device.device_id], dps, self.hub_ca, opts.configure_timeout_s, readings)
            if change is not None and next(powered) == change_at:  # a third of the plant is on: the operator's upload
                threading.Thread(target=change.start, name="template-upload", daemon=True).start()
            return outcome

        dps = self.dps([sensors[d.device_id] for d in plan if d.is_gateway])
        lap("incidents")
        everyone = [*(d for d in plan if d is not revoked), stranger, revoked]
        try:
            if opts.on_phase is not None:
                opts.on_phase("power-on")
            outcomes = run_parallel(everyone, power_on, opts.workers, "power-on")
        finally:
            if previous_limit is not None:
                self._spill_held = self.hub_device_count(opts.spill_hub)  # before later steps add devices
                self.restore_hub(opts.spill_hub, previous_limit)
        lap("power-on")

        def time_travel() -> tuple[list[DeviceOutcome], dict[str, int]]:
            """Sensors installed two years ago, whose certificates are now due, through a renewal round."""
            cohort_plan = self.aged_stock(facilities[: min(3, len(facilities))])
            aged = run_parallel(
                cohort_plan, lambda pair: onboard(pair[0], pair[1], dps, self.hub_ca, opts.configure_timeout_s),
                opts.workers, "aged-stock")
            time.sleep(FIRST_READING_DELAY_S)  # their first readings, before the renewal round takes them over
            for o in aged:
                if o.status == "configured":
                    o.sensor.send_reading()
                    o.sensor.release()
            return aged, self.renewal_round([o for o in aged if o.status == "configured"], dps)

        if opts.on_phase is not None:
            opts.on_phase("after-rollout")
        # The storm and the lifecycle touch different sensors and mostly wait (on Event Grid's batches, on the
        # renewal queue's polling): they run side by side, as they would in a live system.
        # The mid-run template change's rollout finishes meanwhile: the storm leaves its sensors out (the rollout's
        # writes are not the storm's).
        stormed = [o for o in outcomes if change is None or o.device.type_code != change.type_code]
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="after-rollout") as pool:
            storm_run, lifecycle_run = pool.submit(self.redelivery_storm, stormed), pool.submit(time_travel)
            funnel_run = pool.submit(self.funnel_round, outcomes, readings, funnel_started, opts.funnel_timeout_s)
            change_run = pool.submit(change.finish) if change is not None else None
            storm, (aged, lifecycle), funnel = storm_run.result(), lifecycle_run.result(), funnel_run.result()
            changed = change_run.result() if change_run is not None else {}
        readings.close()
        configured_aged = [o for o in aged if o.status == "configured"]
        lap("redelivery storm, certificate renewal and funnel (side by side)")
        result = ScenarioResult(outcomes, time.monotonic() - started, incidents=incidents, storm=storm,
                                lifecycle=lifecycle, aged=aged, phases=phases, revocation=revocation, funnel=funnel,
                                template_change=changed)
        if change is not None:
            changed["direct"] = change.onboarded_directly(outcomes)
        if len(configured_aged) != len(aged):
            result.failures.append(f"{len(aged) - len(configured_aged)} aged-stock sensors were not configured")
        self.verify(result)
        lap("verification")
        result.wall_s = time.monotonic() - started
        return result

    # -- the onboarding funnel ----------------------------------------------------------------------------------
    def funnel_round(self, outcomes: list[DeviceOutcome], readings: Readings, since: dt.datetime,
                     timeout_s: float = 240) -> dict:
        """Once every first reading went out and the silent sensors have outstayed the acknowledged stage's limit:
        run the funnel's timer (as an operator would) until it has flagged every silent sensor stuck; then read what
        the product recorded: stages in SQL (onboarding_stages), stuck tags on the twins, the digest ledger and the
        alerts queue."""
        readings.join()
        settings = self.services.settings
        limit = settings.number("FUNNEL_STUCK_ACKNOWLEDGED_SECONDS", 900)
        silent = [o for o in outcomes if o.sensor.silent and o.status == "configured"]
        if limit > 120:
            return {"skipped": f"FUNNEL_STUCK_ACKNOWLEDGED_SECONDS is {limit:g} s: too long to wait for"}
        last_ack = max((o.sensor.timeline.configured or 0 for o in silent), default=time.monotonic())
        time.sleep(max(0.0, last_ack + limit + 2 - time.monotonic()))
        hubs = self.services.iothub()

        def stuck(o: DeviceOutcome) -> dict | None:
            twin = hubs.get_twin(o.hub, o.device.device_id)
            return ((twin.tags.get("onboarding") or {}).get("stuck") if twin else None) or None

        senders = {o.device.device_id for o in outcomes if o.status == "configured" and not o.sensor.silent}
        silent_facilities = {o.device.facility for o in silent}
        today = dt.datetime.now(dt.UTC).date().isoformat()

        def recorded() -> tuple[list[dict], list[dict]]:
            rows = self.services.database.fetch_all(
                "SELECT device_id, stage, at FROM onboarding_stages WHERE recorded_at >= ?", [sql_utc(since)])
            digests = self.services.database.fetch_all(
                "SELECT facility, stage, devices FROM onboarding_digests WHERE digest_date = ? AND stage = ?",
                [today, "acknowledged"])
            return rows, digests

        # The timer also runs every 30 s on its own; one run now, then wait for the product's record to settle (a
        # burst of thousands of new sensors takes a run some time).
        self.admin("onboarding_funnel")
        deadline, flagged = time.monotonic() + timeout_s, {}
        every_s = max(2.0, len(outcomes) / 3600)  # the record is read whole: less often for a bigger rollout
        while True:
            time.sleep(every_s)
            rows, digests = recorded()
            live = {r["device_id"] for r in rows if r["stage"] == "live"}
            flagged = {o.device.device_id: stuck(o) for o in silent}
            if (senders <= live and all(flagged.values())
                    and silent_facilities <= {d["facility"] for d in digests}) or time.monotonic() > deadline:
                break
        by_stage: dict[str, set[str]] = {}
        times: dict[tuple[str, str], dt.datetime] = {}
        for row in rows:
            by_stage.setdefault(row["stage"], set()).add(row["device_id"])
            at = row["at"]
            times[(row["device_id"], row["stage"])] = at if isinstance(at, dt.datetime) else \
                dt.datetime.fromisoformat(str(at))
        live_spans = sorted((times[(d, "live")] - times[(d, "allocated")]).total_seconds()
                            for d in by_stage.get("live", ()) if (d, "allocated") in times)
        from cert_lifecycle.alerts import list_alerts
        from cert_lifecycle.settings import ALERTS_QUEUE

        queued = [m for m in list_alerts(self.services.queue(ALERTS_QUEUE))
                  if m.get("type") == "onboardingStuckDigest"]
        in_digest = {d["deviceId"] for m in queued for d in m.get("devices", [])}
        return {"senders": len(senders), "sendersLive": len(senders & by_stage.get("live", set())),
                "stages": {stage: len(by_stage.get(stage, ())) for stage in
                           ("allocated", "created", "configured", "acknowledged", "live")},
                "silent": len(silent), "silentStuck": sum(1 for v in flagged.values() if v),
                "silentInDigest": sum(1 for o in silent if o.device.device_id in in_digest),
                "digests": [f"{d['facility']} {d['stage']} ({d['devices']})" for d in digests],
                "powerOnToLiveRecorded": {"p50": _quantile(live_spans, 0.5), "p95": _quantile(live_spans, 0.95)},
                "readingsSent": readings.sent, "readingsFailed": readings.failed}

    def _stranger(self, device_id: str) -> SimulatedSensor:
        """A sensor whose certificate the regional CA issued, for a plant SQL does not know."""
        from cert_lifecycle.signer import KeyVaultSigner, key_vault_sign_digest
        from shared.keyvault import crypto_client

        sensor = SimulatedSensor(device_id)
        ca = self.services.certificates.get_certificate(data.CA_NAMES["west"])
        signer = KeyVaultSigner(x509.load_der_x509_certificate(bytes(ca.cer)), key_vault_sign_digest(
            crypto_client(self.services.settings, self.services.credential, ca.key_id)))
        csr = x509.load_pem_x509_csr(sensor.csr_pem().encode())
        now = dt.datetime.now(dt.UTC)
        cert = signer.sign_certificate(
            x509.CertificateBuilder().subject_name(csr.subject).issuer_name(signer.ca_certificate.subject)
            .public_key(csr.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=730))
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        from cryptography.hazmat.primitives.serialization import Encoding

        sensor.install_certificate({"certificate": cert.public_bytes(Encoding.PEM).decode(),
                                    "caCertificates": [signer.ca_certificate.public_bytes(Encoding.PEM).decode()]})
        return sensor

    def verify(self, result: ScenarioResult) -> None:
        expected = ExpectedConfigurations(self.services.blob_service, self.services.database)
        by_id = {o.device.device_id: o for o in result.outcomes}
        for outcome in result.outcomes:
            if outcome.status != "configured":
                continue
            identity = parse_device_id(outcome.device.device_id)
            errors = configuration_errors(outcome.sensor.applied or {},
                                          expected.for_device(identity.facility, identity.template))
            if errors:
                result.configuration_errors[outcome.device.device_id] = errors
        if result.configuration_errors:
            result.failures.append(f"{len(result.configuration_errors)} twins differ from template (+) overrides")
        revoked = by_id[result.incidents["revoked"]]
        self._verify_revoked(result, revoked)
        stranger = by_id[result.incidents["unknownFacility"]]
        if stranger.status != "refused" or stranger.reason != "unknown_facility":
            result.failures.append(f"unknown-facility sensor was {stranger.status} ({stranger.reason})")
        expected_refusals = {revoked.device.device_id, stranger.device.device_id}
        lost = [o for o in result.outcomes if o.status != "configured" and o.device.device_id not in expected_refusals]
        if lost:
            result.failures.append(f"{len(lost)} sensors lost (powered on, never configured): "
                                   + ", ".join(f"{o.device.device_id} {o.status} {o.reason}" for o in lost[:5]))
        life = result.lifecycle
        if life and any(life[k] != life["agedSensors"] for k in (
                "installed", "renewedTwoYears", "refusedUnauthorized", "reprovisioned", "connected", "completed")):
            result.failures.append(f"certificate renewals incomplete: {life}")
        if life and life["graceHours"] == 0 and life["supersededRevoked"] != life["agedSensors"]:
            result.failures.append(f"superseded certificates not all revoked: {life}")
        if "spillHubLimit" in result.incidents:
            self._verify_spill(result)
        if result.storm.get("rewritten"):
            result.failures.append(f"redelivery storm rewrote {result.storm['rewritten']} twins")
        self._verify_funnel(result)
        self._verify_template_change(result)

    def _template_change(self, plan: list[PlannedDevice], sensors: dict[str, SimulatedSensor],
                         silent: set[str]):
        """The mid-run template change (local/fleet/template_change.py), or None when the options leave it out."""
        from local.fleet.template_change import TemplateChange, choose_type

        type_code = choose_type(plan, silent) if self.options.template_change else None
        return TemplateChange(self.services, type_code, sensors) if type_code else None

    def _verify_template_change(self, result: ScenarioResult) -> None:
        """At the end, the drift check (read-only) over every hub: no sensor may differ from template (+) overrides,
        the changed template included; and the mid-run change's rollout completed."""
        from local.fleet.template_change import verify
        from twin_setup.drift import build_drift

        drift = build_drift(self.services).run(apply=False, actor="demo:verification").as_dict(limit=5)
        if not result.template_change:
            if drift["drifted"]:
                result.failures.append(f"drift after the run: {drift['drifted']} sensors differ: {drift['sensors']}")
            return
        result.template_change["drift"] = {k: drift[k] for k in ("scanned", "drifted", "missed", "edited", "held",
                                                                 "unacknowledged", "errors", "incompleteHubs")}
        result.failures.extend(verify(result.template_change, drift))

    def _verify_funnel(self, result: ScenarioResult) -> None:
        """Every configured sensor that sent a reading is live in the product's record, the silent ones are not and
        are flagged stuck, and the day's digest for their stage went to their facility."""
        funnel = result.funnel
        if not funnel or "skipped" in funnel:
            return
        # The rollout's sensors (the aged cohort's renewal may move a sensor to another hub before the funnel sees it)
        if funnel["sendersLive"] != funnel["senders"]:
            result.failures.append(f"funnel: {funnel['sendersLive']} of the {funnel['senders']} sensors that sent "
                                   "telemetry are live")
        if funnel["silentStuck"] != funnel["silent"]:
            result.failures.append(f"funnel: {funnel['silentStuck']} of {funnel['silent']} silent sensors stuck")
        if funnel["silent"] and not funnel["digests"]:
            result.failures.append("funnel: no stuck-sensor digest for the acknowledged stage today")


    def _verify_revoked(self, result: ScenarioResult, revoked: DeviceOutcome) -> None:
        """Revoked for cause: the revoke function disallowed it at DPS, and DPS itself refused it (disabled individual
        enrollment), so the webhook was never asked about it (no decision in the audit trail)."""
        device_id = revoked.device.device_id
        if device_id not in result.revocation.get("disallowedAtDps", []):
            result.failures.append(f"the revocation did not disallow {device_id} at DPS: "
                                   f"{result.revocation.get('warnings')}")
        registration = revoked.sensor.registration
        asked = self.services.database.fetch_one(  # since the revocation: a running stack keeps earlier runs' rows
            "SELECT COUNT(*) AS n FROM provisioning_events WHERE registration_id = ? AND at >= ?",
            [device_id, sql_utc(self._revoked_at)])["n"]
        if revoked.status != "refused" or revoked.reason != "enrollment_disabled":
            result.failures.append(f"revoked sensor was {revoked.status} ({revoked.reason}), expected refused by DPS "
                                   "(enrollment_disabled)")
        elif registration is None or registration.webhook_status is not None or asked:
            result.failures.append(f"revoked sensor {device_id}: DPS asked the webhook ({asked} decisions audited)")
        else:
            enrollment = (registration.enrollment or "").split(":", 1)[0]
            result.incidents["revoked"] += (f": revoked (keyCompromise) before installation, refused by DPS "
                                            f"({enrollment} enrollment disabled), webhook not asked")

    def _verify_spill(self, result: ScenarioResult) -> None:
        """The hub given too little room holds no more than its limit, and its region's other sensors went
        elsewhere (counted across every webhook worker process, not per process)."""
        host, held = self.options.spill_hub, self._spill_held
        region = {h.host_name: h.region for h in data.HUBS}[host]
        region_of = {f.code: f.region for f in data.facilities()}
        spilled = sum(1 for o in result.outcomes if o.status == "configured" and o.hub != host
                      and region_of.get(o.device.facility) == region)
        result.incidents["spillHubLimit"] += f", holds {held}, {spilled} of its region's sensors placed elsewhere"
        if held > self._spill_limit:
            result.failures.append(f"{host} holds {held} devices, over its limit of {self._spill_limit}")
        if spilled == 0:
            result.failures.append(f"no sensor spilled over from {host} although it was short of room")


REFUSAL_LABELS = {"enrollment_disabled": "refused by DPS: enrollment disabled"}


def refusal_label(reason: str) -> str:
    """How the summary and the report name a refusal: DPS's own, or the webhook's code (and failures)."""
    return REFUSAL_LABELS.get(reason, f"refused/failed: {reason}")


def _quantile(values: list[float], q: float) -> float | None:
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


def summary_rows(result: ScenarioResult) -> dict:
    """Plain figures for the summary table and the report."""
    outcomes = result.outcomes
    by_hub: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for o in outcomes:
        if o.status == "configured":
            by_hub[o.hub] = by_hub.get(o.hub, 0) + 1
        else:
            reasons[o.reason or o.status] = reasons.get(o.reason or o.status, 0) + 1
    latencies = sorted(o.latency_s for o in outcomes if o.latency_s is not None)
    to_telemetry = sorted(o.telemetry_latency_s for o in outcomes if o.telemetry_latency_s is not None)

    def pct(q: float) -> float | None:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else None

    return {"devices": len(outcomes), "configured": sum(1 for o in outcomes if o.status == "configured"),
            "byHub": dict(sorted(by_hub.items())), "refusals": dict(sorted(reasons.items())),
            "p50": pct(0.5), "p95": pct(0.95), "max": latencies[-1] if latencies else None,
            "configurationErrors": len(result.configuration_errors),
            "telemetryP50": _quantile(to_telemetry, 0.5), "telemetryP95": _quantile(to_telemetry, 0.95),
            "funnel": result.funnel, "usage": result.usage, "templateChange": result.template_change}


def to_json(result: ScenarioResult) -> str:
    return json.dumps({"summary": summary_rows(result), "incidents": result.incidents, "storm": result.storm,
                       "lifecycle": result.lifecycle,
                       "revocation": {k: result.revocation.get(k) for k in ("disallowedAtDps", "disabledOn",
                                                                             "crlNumbers", "warnings")},
                       "failures": result.failures, "wallSeconds": result.wall_s, "phases": result.phases}, indent=2)
