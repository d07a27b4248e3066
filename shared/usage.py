"""The Azure operations the product makes, counted where they are made: what a rollout costs against the services'
throttles and bills, per onboarded sensor.

One OpenTelemetry counter, `onboarding.dependency.calls`, attribute `kind`, one add per call that leaves the process
(in Azure the worker exports it to Application Insights with the other metrics, shared/telemetry.py):

| kind | counted in | one is |
|---|---|---|
| sql | shared/sql.py | a statement sent (a round trip) |
| keyvault | shared/keyvault.py clients | an HTTP request to Key Vault (sign, get certificate, ...), retries included |
| blob.read / blob.write | shared/storage.py clients | a GET or HEAD / a PUT, POST or DELETE on Blob Storage |
| queue.send / queue.receive / queue.delete / queue.other | shared/storage.py clients | a Queue Storage request |
| iothub.<operation> | shared/iothub/gateway.py | a registry, twin or query request (getTwin, updateTwin, query, ...) |
| function.<name> | the Functions runtime (locally local/host) | a function invocation |

Locally a run also reads the counts back: with USAGE_COUNTS_DIR set, each process writes its tally to
USAGE_COUNTS_DIR/<pid>.json every half second with its process name (a daemon thread; the last half second may be
missing until the next write) and read_counts() adds them up. The tally is per process: a forked process starts
from zero.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections import Counter
from functools import cache
from pathlib import Path

DIR_ENV = "USAGE_COUNTS_DIR"
METRIC = "onboarding.dependency.calls"
FLUSH_S = 0.5

_lock = threading.Lock()
_counts: Counter[str] = Counter()
_state = {"pid": None, "writer": None}


@cache
def _counter():
    from opentelemetry import metrics

    return metrics.get_meter("sensor-onboarding").create_counter(METRIC, unit="1",
                                                                 description="Azure dependency calls, by kind")


def count(kind: str, n: int = 1) -> None:
    """Record n calls of kind (see the table above)."""
    _counter().add(n, {"kind": kind})
    with _lock:
        if _state["pid"] != os.getpid():  # a forked child: its own tally, its own writer
            _counts.clear()
            _state["pid"], _state["writer"] = os.getpid(), None
            directory = os.environ.get(DIR_ENV)
            if directory:
                _state["writer"] = threading.Thread(target=_write_loop, args=(Path(directory),), daemon=True,
                                                    name="usage-counts")
                _state["writer"].start()
        _counts[kind] += n


def snapshot() -> dict[str, int]:
    """This process's tally so far."""
    with _lock:
        return dict(_counts)


def process_name(argv0: str | None = None) -> str:
    """What runs in this process: the package of `python -m package` (host, iothub, ...), else the script's name."""
    path = Path(argv0 if argv0 is not None else (sys.argv[0] if sys.argv else ""))
    return path.parent.name if path.name == "__main__.py" else path.stem


def _write_loop(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    pid, written, name = os.getpid(), None, process_name()
    path = directory / f"{pid}.json"
    while os.getpid() == pid:
        counts = snapshot()
        if counts != written:
            with contextlib.suppress(OSError):  # counting must never fail the product
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps({"process": name, "counts": counts}))
                tmp.replace(path)
                written = counts
        time.sleep(FLUSH_S)


def read_counts(directory: Path, processes: set[str] | None = None,
                exclude_pids: set[int] = frozenset()) -> dict[str, int]:
    """The tallies under directory, added up: of the processes named (process_name; None: all), without
    exclude_pids (e.g. the reader's own process)."""
    total: Counter[str] = Counter()
    for path in Path(directory).glob("*.json"):
        if path.stem.isdigit() and int(path.stem) in exclude_pids:
            continue
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            tally = json.loads(path.read_text())
            if processes is None or tally["process"] in processes:
                total.update(tally["counts"])
    return dict(total)


# -- Azure SDK clients: azure-core's raw_request_hook runs once per HTTP request sent (after the retry policy) ----

_QUEUE_KINDS = {"POST": "queue.send", "GET": "queue.receive", "DELETE": "queue.delete"}


def _blob_kind(method: str) -> str:
    return "blob.read" if method in ("GET", "HEAD") else "blob.write"


def request_hook(service: str):
    """A raw_request_hook for a client of service (keyvault | blob | queue): counts each request it sends."""
    def hook(request) -> None:
        method = request.http_request.method.upper()
        if service == "blob":
            count(_blob_kind(method))
        elif service == "queue":
            count(_QUEUE_KINDS.get(method, "queue.other"))
        else:
            count(service)

    return hook
