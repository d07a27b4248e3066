"""FUNCTIONS_WORKER_PROCESS_COUNT: several Python worker processes behind one host, as Azure Functions runs them.

One Python process holds one GIL, so a busy app uses at most one core however many threads it has; Functions
answers that with more language worker processes per host (app setting FUNCTIONS_WORKER_PROCESS_COUNT, 1 to
10, default 1). Here the parent binds the port and forks the workers, which accept on the shared socket (the
kernel spreads connections between them). Worker 0 also runs the timer and queue listeners, so a schedule
fires once per host and not once per worker, as with the real host, which owns the triggers.

Flex Consumption (what infra/ deploys) does not take this setting and scales out to more instances instead;
locally the worker processes also stand in for that: several copies of the app, each with its own caches,
sharing SQL, Storage and the hubs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable

log = logging.getLogger("local.host")

SETTING = "FUNCTIONS_WORKER_PROCESS_COUNT"
MAX_WORKERS = 10


def worker_process_count(environ=os.environ) -> int:
    """The setting's value; a clear error names it when it is not a whole number from 1 to 10."""
    raw = (environ.get(SETTING) or "1").strip()
    try:
        count = int(raw)
    except ValueError:
        raise ValueError(f"{SETTING} must be a whole number from 1 to {MAX_WORKERS}, not {raw!r}") from None
    if not 1 <= count <= MAX_WORKERS:
        raise ValueError(f"{SETTING} must be from 1 to {MAX_WORKERS}, not {count}")
    return count


def listening_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_workers(count: int, serve: Callable[[int, socket.socket], None], host: str, port: int,
                stop_timeout_s: float = 10) -> int:
    """Fork `count` workers that each call serve(index, sock); return when they have all stopped.

    SIGTERM/SIGINT reach every worker; when one worker dies, the others are stopped too, so the stack (or
    whoever started the host) sees the host fail instead of a host quietly serving with fewer workers."""
    sock = listening_socket(host, port)
    children: dict[int, int] = {}
    for index in range(count):
        pid = os.fork()
        if pid == 0:  # the worker
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 1
            try:  # whatever happens, the worker leaves here: it must never run on in the parent's code
                serve(index, sock)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except KeyboardInterrupt:
                code = 0
            except Exception:
                log.exception("worker process %d failed", index)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children[pid] = index
    sock.close()
    log.info("Started %d worker processes (%s=%d): %s", count, SETTING, count, sorted(children))

    stopping_since: float | None = None

    def stop(signum: int = signal.SIGTERM, _frame=None) -> None:
        nonlocal stopping_since
        stopping_since = stopping_since or time.monotonic()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    exit_code = 0
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            if stopping_since is not None and time.monotonic() - stopping_since > stop_timeout_s:
                for child in children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
            time.sleep(0.1)
            continue
        index = children.pop(pid)
        if stopping_since is None:
            code = os.waitstatus_to_exitcode(status)
            log.error("worker process %d (pid %d) exited with %d: stopping the host", index, pid, code)
            exit_code = code or 1
            stop()
    return exit_code
