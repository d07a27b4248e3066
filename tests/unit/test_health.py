import threading

from health.checks import CheckResult, health_report, run_checks


def _boom():
    raise ConnectionError("connection refused\nsecond line not shown")


def test_all_ok_is_200():
    status, body = health_report(run_checks({"sql": lambda: 1, "blob": lambda: 2}, timeout_s=2))
    assert status == 200
    assert body["status"] == "ok"
    assert set(body["components"]) == {"sql", "blob"}


def test_one_failure_is_503_with_its_reason():
    status, body = health_report(run_checks({"sql": lambda: 1, "iothub:x": _boom}, timeout_s=2))
    assert status == 503
    assert body["components"]["sql"]["status"] == "ok"
    assert body["components"]["iothub:x"] == {
        "status": "error", "reason": "ConnectionError: connection refused",
        "durationMs": body["components"]["iothub:x"]["durationMs"]}


def test_hung_dependency_is_reported_after_the_deadline():
    release = threading.Event()
    results = run_checks({"keyvault": lambda: release.wait(5), "sql": lambda: 1}, timeout_s=0.2)
    release.set()
    by_name = {r.name: r for r in results}
    assert by_name["keyvault"].ok is False
    assert "timed out" in by_name["keyvault"].reason
    assert by_name["sql"].ok is True


def test_reason_is_bounded():
    status, body = health_report([CheckResult("x", False, "r" * 500, 1.0)])
    assert status == 503
    assert body["components"]["x"]["reason"] == "r" * 500  # report passes results through
    results = run_checks({"x": lambda: (_ for _ in ()).throw(ValueError("v" * 1000))}, timeout_s=1)
    assert len(results[0].reason) <= 200
