"""FUNCTIONS_WORKER_PROCESS_COUNT in the dev host: requests spread over the worker processes, timers fire in
one of them only, and stopping the host stops every worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from local.serve import free_port
from local.stack import REPO_ROOT

pytestmark = pytest.mark.integration


def start_host(tmp_path: Path, workers: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": {
        "FUNCTIONS_WORKER_PROCESS_COUNT": workers, "TICKS_FILE": str(tmp_path / "ticks")}}))
    process = subprocess.Popen(
        [sys.executable, "-m", "local.host", "--app", "tests.integration.worker_count_app:app", "--port", str(port),
         "--settings", str(settings), "--host-json", str(tmp_path / "none.json"), "--state-dir", str(tmp_path),
         "--no-auth"], cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=(tmp_path / "host.log").open("w"),
        env={k: v for k, v in os.environ.items() if k not in ("FUNCTIONS_WORKER_PROCESS_COUNT", "TICKS_FILE")})
    return process, port


def answering_pids(port: int, requests: int = 40, timeout_s: float = 15) -> set[int]:
    deadline = time.monotonic() + timeout_s
    pids: set[int] = set()
    while time.monotonic() < deadline and len(pids) < 2:
        try:
            for _ in range(requests):
                with httpx.Client(timeout=5) as client:  # a new connection each time: the kernel picks a worker
                    pids.add(int(client.get(f"http://127.0.0.1:{port}/api/pid").text))
        except httpx.TransportError:
            time.sleep(0.2)  # not listening yet
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_workers_share_the_port_run_the_timer_once_and_stop_together(tmp_path):
    process, port = start_host(tmp_path, "2")
    try:
        pids = answering_pids(port)
        assert len(pids) == 2 and process.pid not in pids, pids
        time.sleep(2.5)
        ticks = (tmp_path / "ticks").read_text().split()
        assert len(ticks) >= 2 and len(set(ticks)) == 1, ticks  # every tick from one worker, none twice a second
        assert int(ticks[0]) in pids
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
    assert process.returncode == 0
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in pids)


def test_a_bad_worker_count_stops_the_host_with_the_setting_named(tmp_path):
    process, _ = start_host(tmp_path, "eleven")
    assert process.wait(timeout=30) == 2
    assert ("FUNCTIONS_WORKER_PROCESS_COUNT must be a whole number from 1 to 10, not 'eleven'"
            in (tmp_path / "host.log").read_text())
