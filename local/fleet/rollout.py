"""A plant rollout through the real functions: manufacture (sign_csr), power on (DPS -> allocate -> hub ->
Event Grid -> twin setup), wait until configured, then the first telemetry reading after the sensor's warm-up.
Many devices at once, each on a worker thread; first readings go through one small scheduler (Readings)."""

from __future__ import annotations

import heapq
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from local.dps.simulator import DpsSimulator
from local.fleet.device import SimulatedSensor
from local.fleet.plan import PlannedDevice
from local.json_client import HttpError, JsonClient


@dataclass
class DeviceOutcome:
    device: PlannedDevice
    sensor: SimulatedSensor
    status: str  # configured | refused | failed | lost
    reason: str | None = None
    hub: str | None = None

    @property
    def registrations(self) -> int:
        """DPS registrations it took (the firmware retries a transient failure)."""
        return self.sensor.registrations

    @property
    def latency_s(self) -> float | None:
        return self.sensor.timeline.power_on_to_configured_s

    @property
    def telemetry_latency_s(self) -> float | None:
        return self.sensor.timeline.power_on_to_telemetry_s


# The firmware's warm-up between applying its configuration and its first reading. It also keeps the first reading
# apart from the acknowledgement in lastActivityTime, which is how the product learns of telemetry (funnel/stages.py:
# activity within the acknowledgement's second plus FUNNEL_LIVE_MARGIN_SECONDS is the acknowledgement itself).
FIRST_READING_DELAY_S = 2.5


class Readings:
    """Sends each configured sensor's first reading at its time, from a few threads (a timer thread per sensor would
    be thousands), then closes its connection."""

    def __init__(self, workers: int = 16):
        self._heap: list[tuple[float, int, SimulatedSensor]] = []
        self._cv = threading.Condition()
        self._count = 0
        self._pending = 0
        self._closed = False
        self.sent = self.failed = 0
        self._threads = [threading.Thread(target=self._work, name=f"reading-{n}", daemon=True) for n in range(workers)]
        for thread in self._threads:
            thread.start()

    def schedule(self, sensor: SimulatedSensor, delay_s: float = FIRST_READING_DELAY_S) -> None:
        with self._cv:
            self._count += 1
            self._pending += 1
            heapq.heappush(self._heap, (time.monotonic() + delay_s, self._count, sensor))
            self._cv.notify()

    def _work(self) -> None:
        while True:
            with self._cv:
                while True:
                    if self._closed and not self._heap:
                        return
                    if self._heap and self._heap[0][0] <= time.monotonic():
                        _, _, sensor = heapq.heappop(self._heap)
                        break
                    self._cv.wait(timeout=(self._heap[0][0] - time.monotonic()) if self._heap else 0.5)
            try:
                sent = sensor.send_reading()
            except Exception:  # noqa: BLE001 - counted; one sensor's failure is not the rollout's
                sent = False
            finally:
                sensor.release()
            with self._cv:
                self.sent += sent
                self.failed += not sent and not sensor.silent
                self._pending -= 1
                self._cv.notify_all()

    def join(self, timeout_s: float = 120) -> None:
        """Wait until every scheduled reading went out (or failed)."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while self._pending and time.monotonic() < deadline:
                self._cv.wait(timeout=0.5)

    def close(self) -> None:
        self.join()
        with self._cv:
            self._closed = True
            self._cv.notify_all()


SIGN_PATIENCE_S = 120  # how long the factory keeps trying one sensor's sign (an app restart takes ~30 s)


class Factory:
    """The manufacturing partner: sends each sensor's CSR to sign_csr with the function key and its partner credential
    (docs/partners.md) and burns the answer into the device. A device that already holds an active certificate (a
    rerun of the same plan on a running stack) is re-issued as rework when `reissue` is given: the operator's step."""

    def __init__(self, base_url: str, function_key: str, authorization: str, timeout_s: float = 30,
                 reissue: Callable[[str], object] | None = None):
        self.key = function_key
        self.authorization = authorization
        self._reissue = reissue
        self._client = JsonClient(base_url, timeout_s=timeout_s)

    def _sign(self, sensor: SimulatedSensor):
        """One sensor's sign request, retried as docs/partners.md asks of partners: an answer of 429 or 503 after its
        Retry-After, a connection that failed (the app restarting) after 2 s; for up to SIGN_PATIENCE_S."""
        give_up = time.monotonic() + SIGN_PATIENCE_S
        while True:
            try:
                response = self._client.request(
                    "POST", "/api/certificates/sign", body={"csr": sensor.csr_pem()},
                    headers={"x-functions-key": self.key, "Authorization": self.authorization})
            except HttpError:
                if time.monotonic() > give_up:
                    raise
                time.sleep(2)
                continue
            if response.status not in (429, 503) or time.monotonic() > give_up:
                return response
            time.sleep(min(30.0, float(response.headers.get("Retry-After") or response.headers.get("retry-after")
                                       or 5)))

    def manufacture(self, sensor: SimulatedSensor) -> None:
        response = self._sign(sensor)
        if response.status == 409 and self._reissue is not None and b"certificate_exists" in response.data:
            self._reissue(sensor.device_id)
            response = self._sign(sensor)
        sensor.install_certificate(response.raise_for_status("sign_csr").json())


class Progress:
    """A one-line progress bar on stderr (only when it is a terminal, else a line every 10%)."""

    def __init__(self, total: int, label: str):
        self.total, self.label, self.done = max(total, 1), label, 0
        self._lock = threading.Lock()
        self._tty = sys.stderr.isatty()
        self._last_decile = -1
        self._started = time.monotonic()

    def tick(self, note: str = "") -> None:
        with self._lock:
            self.done += 1
            fraction = self.done / self.total
            elapsed = time.monotonic() - self._started
            if self._tty:
                bar = "#" * int(fraction * 30)
                sys.stderr.write(f"\r{self.label} [{bar:<30}] {self.done}/{self.total} {elapsed:5.1f}s {note:<20}")
                if self.done == self.total:
                    sys.stderr.write("\n")
            elif int(fraction * 10) > self._last_decile:
                self._last_decile = int(fraction * 10)
                sys.stderr.write(f"{self.label}: {self.done}/{self.total} ({elapsed:.1f}s)\n")
            sys.stderr.flush()


def run_parallel(items: Iterable, work: Callable, workers: int, label: str) -> list:
    items = list(items)
    progress = Progress(len(items), label)
    results = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=label) as pool:
        futures = [pool.submit(work, item) for item in items]
        for future in as_completed(futures):
            results.append(future.result())
            progress.tick()
    return results


def onboard(device: PlannedDevice, sensor: SimulatedSensor, dps: DpsSimulator, hub_ca: str | None,
            configure_timeout_s: float, readings: Readings | None = None) -> DeviceOutcome:
    """Power on one manufactured sensor and follow it until it runs its configuration (or is refused). hub_ca
    verifies the hubs' server certificates; the sensor presents its own certificate to its hub. With readings, a
    configured sensor's first telemetry reading is scheduled there (it keeps its connection until then)."""
    try:
        result = sensor.power_on(dps, hub_ca, configure_timeout_s)
    except Exception as exc:  # noqa: BLE001 - one sensor's failure is an outcome, not the end of the rollout
        return DeviceOutcome(device, sensor, "failed", f"registration: {type(exc).__name__}", None)
    if result.status != "assigned":
        # The device sees only DPS's code (CustomAllocationFailed...); the reason a user can act on is the webhook's
        # own code, which an operator reads in the audit table (provisioning_events.reason_code).
        return DeviceOutcome(device, sensor, "refused", result.webhook_code or result.error_code, None)
    configured = False
    try:
        configured = sensor.await_configuration(configure_timeout_s)
    except HttpError as exc:
        return DeviceOutcome(device, sensor, "failed", f"device_link: {exc.status or exc}", result.assigned_hub)
    finally:
        if configured and readings is not None and not sensor.silent:
            readings.schedule(sensor)
        else:
            sensor.release()
    if configured:
        return DeviceOutcome(device, sensor, "configured", None, result.assigned_hub)
    reason = ((sensor.applied or {}).get("onboarding") or {}).get("reason")
    return DeviceOutcome(device, sensor, "lost", reason or "not configured in time", result.assigned_hub)
