"""Twin setup benchmark: prints figures, asserts nothing. `python -m bench.twin_setup [--devices N] [--s1]`

Starts its own local pieces on free ports (Azurite, one IoT Hub emulator in a separate process, SQLite through
ODBC seeded like the stack), so it does not disturb a running `make run`. Then, for N devices of mixed types
across the 12 facilities (2% gateways with an edge deployment):

1. sequential: DeviceCreated events (Event Grid schema, decoded into func.EventGridEvent as the worker does) run
   through the same code as on_device_created, one at a time: per-device handler time, the time spent inside
   IoT Hub calls, and the difference, the handler's own overhead (parse, caches, merge, hash, plan, SDK);
2. redelivery: the same N events again (the idempotent path: one twin read, no write);
3. concurrent: N more devices with 16 worker threads: devices/s;
4. pure: template + overrides merge, validation, hash and plan in process (no I/O), per device;
and the cache figures: template downloads / conditional GETs, SQL override queries.
--s1 runs the emulator with IoT Hub's S1 throttles (twin updates 50/s, reads 100/s) and reports the rate the
handler sustains with its Retry-After handling, and how many calls were retried.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from local.azurite import AzuritePorts, connection_string, port_open, start_azurite  # noqa: E402
from local.host.eventgrid import to_trigger_value  # noqa: E402
from local.secrets import stack_secret  # noqa: E402
from local.seed.seed import seed_sql  # noqa: E402
from local.serve import free_port  # noqa: E402
from local.tls import ensure_tls  # noqa: E402
from shared.bootstrap import Services  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.identity import parse_device_id  # noqa: E402
from shared.retry import TransientError  # noqa: E402
from shared.sql import Database  # noqa: E402
from twin_setup.configuration import build_configuration  # noqa: E402
from twin_setup.events import from_trigger  # noqa: E402
from twin_setup.plan import TwinView, plan_configuration  # noqa: E402
from twin_setup.wiring import build_twin_setup  # noqa: E402

HUB = "iothub-bench-local"
TYPES = ["temp", "press", "vib", "flow"]
FACILITIES = [f"FAC{i:02d}" for i in range(1, 13)]


def device_ids(n: int, tag: str) -> list[tuple[str, bool]]:
    """(device id, is gateway): mixed types over the facilities; every 50th a gateway."""
    out = []
    for i in range(n):
        if i % 50 == 49:
            out.append((f"sensor-gw-{FACILITIES[i % 12]}-{tag}{i:05d}", True))
        else:
            out.append((f"sensor-{TYPES[i % 4]}-{FACILITIES[i % 12]}-{tag}{i:05d}", False))
    return out


def event(device_id: str, host: str) -> object:
    return to_trigger_value({
        "id": f"bench-{device_id}",
        "topic": f"/SUBSCRIPTIONS/B/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.DEVICES/IOTHUBS/{HUB}",
        "subject": f"devices/{device_id}", "eventType": "Microsoft.Devices.DeviceCreated",
        "eventTime": "2026-03-01T10:00:00.0000000Z", "dataVersion": "1", "metadataVersion": "1",
        "data": {"hubName": HUB, "deviceId": device_id, "twin": {"deviceId": device_id, "version": 2}}})


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_hub(state: Path, port: int, s1: bool, env: dict) -> subprocess.Popen:
    args = [sys.executable, "-m", "local.iothub", "--state-dir", str(state), "--hub", f"{HUB}={port}"]
    if not s1:
        args.append("--no-rate-limit")
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not port_open(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the hub emulator did not start")
        time.sleep(0.1)
    return proc


def create_devices(registry, devices: list[tuple[str, bool]]) -> None:
    registry.protocol.config.keep_alive = True
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: registry.create_device_with_certificate_authority(
            item[0], "enabled", iot_edge=item[1]), devices))


def in_process_hub(state: Path, port: int, tls, devices: list[tuple[str, bool]]):
    """--s1: the hub in this process, so the devices can be created past the registry throttle (100/min);
    then the S1 throttles are switched on for the benchmark itself."""
    from local.iothub import RateLimits, create_app, local_hub_config
    from local.iothub.ratelimit import RateLimiter
    from local.serve import serve_in_thread

    app = create_app(local_hub_config(state, HUB, port, rate_limits=RateLimits(enabled=False)))
    server = serve_in_thread(app, port, tls)
    hub = app.state.hub
    for device_id, edge in devices:
        hub.service.put_device(device_id, {"deviceId": device_id, "status": "enabled", "capabilities": {
            "iotEdge": edge}, "authentication": {"type": "certificateAuthority"}}, None)
    hub.limiter = RateLimiter(RateLimits())
    return server


def run(n: int, s1: bool) -> None:
    state = Path(tempfile.mkdtemp(prefix="bench-twin-"))
    tls = ensure_tls(state)
    os.environ["REQUESTS_CA_BUNDLE"] = str(tls.ca_bundle)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    port = free_port()
    owner = stack_secret(state, f"iothub-{HUB}-iothubowner")
    stack_secret(state, "identity-signing-key")
    ports = AzuritePorts(free_port(), free_port(), free_port())
    azurite = start_azurite(state / "azurite", ports, log_file=state / "azurite.log")
    first, second = device_ids(n, "A"), device_ids(n, "B")
    started = time.perf_counter()
    hub_proc = None if s1 else start_hub(state, port, s1, env)
    hub_server = in_process_hub(state, port, tls, first + second) if s1 else None
    try:
        storage = connection_string(ports)
        db_path = state / "bench.db"
        seed_sql(Database(f"Driver=SQLite3;Database={db_path}"))
        host = f"localhost:{port}"
        settings = Settings({
            "SQL_CONNECTION_STRING": f"Driver=SQLite3;Database={db_path}", "STORAGE_CONNECTION_STRING": storage,
            "IOT_HUB_CONNECTION_STRINGS": f"HostName={host};SharedAccessKeyName=iothubowner;SharedAccessKey={owner}",
            "IOT_HUB_NAMES": f"{HUB}={host}", "USE_MANAGED_IDENTITY": "false",
        })
        svc = Services(settings)
        container = svc.blob_service.get_container_client("sensor-configurations")
        container.create_container()
        svc.blob_service.create_container("device-configurations")
        for path in (REPO / "infra" / "templates").glob("*-sensor.json"):
            container.upload_blob(path.name, path.read_bytes())
        from azure.iot.hub import IoTHubRegistryManager

        registry = IoTHubRegistryManager.from_connection_string(settings.iot_hub_connection_string(host))
        if not s1:
            create_devices(registry, first + second)
        print(f"setup: {2 * n} devices created in {time.perf_counter() - started:.1f}s "
              f"({'S1 throttles' if s1 else 'throttles off'})")
        service = build_twin_setup(svc)

        done_at: dict[str, float] = {}

        def handle(device_id: str):
            try:
                outcome = service.handle(from_trigger(event(device_id, host)))
            except TransientError:  # the invocation fails; Event Grid would redeliver
                return SimpleNamespace(outcome="retry", retries=0, device_id=device_id)
            done_at[device_id] = time.perf_counter()
            return outcome

        # 1. sequential
        totals, hub_times, outcomes = [], [], []
        for device_id, _ in first:
            before = service.hub.stats.seconds
            t0 = time.perf_counter()
            outcomes.append(handle(device_id).outcome)
            totals.append(time.perf_counter() - t0)
            hub_times.append(service.hub.stats.seconds - before)
        overhead = [t - h for t, h in zip(totals, hub_times, strict=True)]
        wall = sum(totals)
        print(f"\n1. sequential, {n} devices: {n / wall:.0f} devices/s; outcomes {dict_count(outcomes)}")
        print(f"   handler total per device: mean {ms(statistics.mean(totals))}, p50 {ms(pct(totals, .5))}, "
              f"p95 {ms(pct(totals, .95))}, p99 {ms(pct(totals, .99))}")
        print(f"   inside IoT Hub calls:     mean {ms(statistics.mean(hub_times))} "
              f"({service.hub.stats.calls})")
        waits = ", incl. Retry-After waits" if s1 else ""
        print(f"   handler overhead (total - IoT Hub{waits}): mean {ms(statistics.mean(overhead))}, "
              f"p50 {ms(pct(overhead, .5))}, p95 {ms(pct(overhead, .95))}, p99 {ms(pct(overhead, .99))}")
        print("   (the first device includes cold caches: template downloads, SQL connection, TLS handshake: "
              f"{ms(totals[0])})")

        # 2. redelivery
        totals = []
        for device_id, _ in first:
            t0 = time.perf_counter()
            assert handle(device_id).outcome in ("unchanged", "retry")
            totals.append(time.perf_counter() - t0)
        print(f"\n2. redelivery of the same {n} events (no writes): mean {ms(statistics.mean(totals))}, "
              f"p95 {ms(pct(totals, .95))} per event")

        # 3. concurrent
        t0 = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda item: handle(item[0]), second))
            first_round = [r.outcome for r in results]
            rounds, pending = 0, [r.device_id for r in results if r.outcome == "retry"]
            while pending:  # what Event Grid's redelivery does, sooner
                rounds += 1
                time.sleep(1)
                results += list(pool.map(handle, pending))
                pending = [r.device_id for r in results[-len(pending):] if r.outcome == "retry"]
        wall = time.perf_counter() - t0
        retried = sum(r.retries for r in results)
        print(f"\n3. concurrent, {n} new devices, 16 threads: {n / wall:.0f} devices/s ({wall:.1f}s); "
              f"first delivery {dict_count(first_round)}; transient retries inside the handler {retried}; "
              f"redelivery rounds {rounds}")
        sensors = [done_at[d] - t0 for d, edge in second if not edge]
        gateways = [done_at[d] - t0 for d, edge in second if edge]
        print(f"   {len(sensors)} sensors all configured after {max(sensors):.1f}s "
              f"({len(sensors) / max(sensors):.0f}/s); "
              f"{len(gateways)} gateways after {max(gateways):.1f}s"
              f"{' (applyConfigurationContent: 20/min per S1 unit)' if s1 else ''}")

        reads = service.templates.reads
        print(f"\ncaches: template downloads {reads.downloads}, conditional GETs {reads.not_modified}; "
              f"SQL override queries {service.overrides.loads} (12 facilities)")

        # 4. pure
        templates = {name: service.templates.get(name) for name in
                     ("temperature", "pressure", "vibration", "flow", "gateway")}
        twin = TwinView("x", "AAAAAAAAAAE=", {}, {"onboarding": {"state": "awaitingConfiguration"}}, True)
        identities = [parse_device_id(d) for d, _ in first]
        t0 = time.perf_counter()
        for identity in identities:
            overrides = service.overrides.for_device(identity.facility, identity.template)
            config = build_configuration(identity, templates[identity.template], overrides, service.settings.limits)
            plan_configuration(twin, config, service.settings.limits, service.settings.essential_sections, "u", "t")
        print(f"\n4. pure merge + validate + hash + plan: {(time.perf_counter() - t0) / n * 1e6:.0f} µs per device")
        registry.protocol.close()
        service.hub.close()
    finally:
        if hub_proc is not None:
            hub_proc.terminate()
            hub_proc.wait(10)
        if hub_server is not None:
            hub_server.stop()
        azurite.terminate()
        azurite.wait(10)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def dict_count(values: list[str]) -> str:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return json.dumps(counts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.twin_setup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--s1", action="store_true", help="run the emulator with IoT Hub's S1 throttles")
    args = parser.parse_args(argv)
    logging.getLogger("twin_setup").setLevel(logging.ERROR)  # retries are counted, not logged
    run(args.devices, args.s1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
