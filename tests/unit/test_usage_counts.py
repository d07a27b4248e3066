"""Azure operations counted where the product makes them (shared/usage.py) and read back across processes, and the
demo's figures per sensor (local/fleet/usage.py)."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

from local.fleet.usage import per_sensor, summary_lines
from shared import usage


def _request(method: str):
    return SimpleNamespace(http_request=SimpleNamespace(method=method))


def test_each_sdk_request_counts_by_service_and_kind():
    before = usage.snapshot()
    for service, method in [("keyvault", "POST"), ("blob", "GET"), ("blob", "HEAD"), ("blob", "PUT"),
                            ("queue", "POST"), ("queue", "GET"), ("queue", "DELETE"), ("queue", "PUT")]:
        usage.request_hook(service)(_request(method))
    after = usage.snapshot()
    grew = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    assert grew == {"keyvault": 1, "blob.read": 2, "blob.write": 1, "queue.send": 1, "queue.receive": 1,
                    "queue.delete": 1, "queue.other": 1}


def test_a_sql_round_trip_is_counted(tmp_path):
    from shared.sql import Database

    db = Database(f"Driver=SQLite3;Database={tmp_path / 'c.db'}")
    before = usage.snapshot().get("sql", 0)
    db.execute("CREATE TABLE t (x INTEGER)")
    db.fetch_all("SELECT x FROM t")
    assert usage.snapshot()["sql"] - before == 2
    db.close()


def test_processes_write_their_tallies_and_the_reader_adds_up_the_ones_it_asks_for(tmp_path, monkeypatch):
    monkeypatch.setenv(usage.DIR_ENV, str(tmp_path))
    children = []
    for kind in ("sql", "sql", "keyvault"):
        pid = os.fork()
        if pid == 0:  # a worker process: counts from zero, writes its own file
            try:
                usage.count(kind, 3)
                time.sleep(usage.FLUSH_S * 3)
            finally:
                os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    name = usage.process_name()
    assert usage.read_counts(tmp_path) == {"sql": 6, "keyvault": 3}
    assert usage.read_counts(tmp_path, {name}, exclude_pids={children[0]}) == {"sql": 3, "keyvault": 3}
    assert usage.read_counts(tmp_path, {"some-other-process"}) == {}


def test_process_names():
    assert usage.process_name("/repo/local/host/__main__.py") == "host"
    assert usage.process_name("/repo/.venv/bin/pytest") == "pytest"


def test_figures_per_sensor_by_step():
    steps = {"manufacture": {"sql": 300, "keyvault": 100, "function.sign_csr": 100},
             "power-on": {"sql": 900, "iothub.updateTwin": 90, "function.allocate": 90, "hub.registry": 180},
             "after-rollout": {"sql": 90, "iothub.query": 9}}
    data = per_sensor(steps, manufactured=100, configured=90)
    made, onboarding = data["perSensor"]["manufacture"], data["perSensor"]["onboarding"]
    assert made["groups"]["SQL round trips"] == 3 and made["groups"]["Key Vault requests"] == 1
    assert onboarding["groups"]["SQL round trips"] == 11 and onboarding["groups"]["IoT Hub requests"] == 1.1
    assert onboarding["groups"]["function invocations"] == 1 and onboarding["reachedHubs"] == {"registry": 2}
    text = "\n".join(summary_lines(data))
    assert "SQL round trips" in text and "updateTwin 1" in text and "registry 2" in text
    assert summary_lines({}) == []


def test_the_summary_shows_operations_per_sensor_and_throughput(capsys):
    from local.fleet.report import print_summary
    from local.fleet.scenario import ScenarioResult

    def outcome(n: int, status: str = "configured"):
        return SimpleNamespace(status=status, hub="localhost:8441", reason=None, latency_s=0.5,
                               telemetry_latency_s=3.0, device=SimpleNamespace(device_id=f"sensor-temp-FAC01-SN{n}"))

    result = ScenarioResult([outcome(n) for n in range(100)], wall_s=30, phases={"manufacture": 2.0, "power-on": 4.0})
    result.usage = per_sensor({"manufacture": {"sql": 500}, "power-on": {"sql": 400, "iothub.getTwin": 100}},
                              manufactured=100, configured=100)
    print_summary(result)
    out = capsys.readouterr().out
    assert "Azure operations per sensor" in out and "IoT Hub requests" in out
    assert "throughput (sensors per second)         manufacture 50.0, power-on 25.0" in out


def test_every_thread_shares_one_connection_pool_per_hub():
    """A timer run's new worker threads reuse the hub's keep-alive connections instead of opening their own."""
    import base64
    import threading

    from azure.iot.hub import IoTHubRegistryManager

    from shared.iothub.clients import POOL_SIZE, tuned

    key = base64.b64encode(b"k" * 32).decode()
    manager = tuned(IoTHubRegistryManager.from_connection_string(
        f"HostName=localhost:8441;SharedAccessKeyName=service;SharedAccessKey={key}"))
    driver = manager.protocol.config.pipeline._sender.driver
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(driver.session)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(s) for s in seen}) == 1 and seen[0].adapters["https://"]._pool_maxsize == POOL_SIZE
    assert seen[0].adapters["https://"].max_retries.status == 0  # the tuned retry policy still applies
    manager.protocol.close()
