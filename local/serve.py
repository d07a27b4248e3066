"""Serve ASGI apps (the emulators, the dev host) with uvicorn, in a thread or in the foreground."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass

import uvicorn

from local.tls import TlsFiles


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_config(app, port: int, tls: TlsFiles | None = None, host: str = "127.0.0.1") -> uvicorn.Config:
    kwargs = {}
    if tls is not None:
        kwargs = {"ssl_certfile": str(tls.server_cert), "ssl_keyfile": str(tls.server_key)}
    # A short graceful shutdown: uvicorn would otherwise wait up to 30 s for idle TLS keep-alive connections.
    # Idle keep-alive connections stay open for 120 s (uvicorn's default is 5 s): clients that pool connections
    # (requests, msrest) would otherwise reuse one the server has just closed and fail with RemoteDisconnected.
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                          timeout_graceful_shutdown=3, timeout_keep_alive=120, **kwargs)


@dataclass
class RunningServer:
    server: uvicorn.Server
    thread: threading.Thread
    port: int

    def stop(self, timeout: float = 10) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def serve_in_thread(app, port: int, tls: TlsFiles | None = None, startup_timeout: float = 15) -> RunningServer:
    """Start app on 127.0.0.1:port in a daemon thread and return once it accepts connections."""
    server = uvicorn.Server(server_config(app, port, tls))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not the main thread
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"server on port {port} did not start")
        time.sleep(0.02)
    return RunningServer(server, thread, port)


async def serve_many(configs: list[uvicorn.Config]) -> None:
    """Run several uvicorn servers in one event loop (one process for all emulators: faster start)."""
    servers = [uvicorn.Server(c) for c in configs]
    await asyncio.gather(*(s.serve() for s in servers))


def run_servers(configs: list[uvicorn.Config]) -> None:
    """Serve configs in the foreground on uvloop when it is installed (as uvicorn itself prefers): its TLS and
    socket handling in C take about half the CPU of asyncio's at fleet scale."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve_many(configs))
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve_many(configs))
