"""Serve ASGI apps (the emulators, the dev host) with uvicorn, in a thread or in the foreground.

Mutual TLS (`client_ca=`): the server asks every client for a certificate but does not require one
(ssl.CERT_OPTIONAL: service callers such as msrest present none and are unaffected). A certificate that is
presented must chain to one of the client_ca roots, or OpenSSL aborts the handshake; one that does reaches the
app through the ASGI TLS extension (https://asgi.readthedocs.io/en/latest/specs/tls.html):
`scope["extensions"]["tls"]["client_cert_chain"]` (PEM strings; the leaf only: Python 3.11's ssl exposes no
more of the chain) and `client_cert_name` (the leaf's subject, RFC 4514). uvicorn does not fill that extension
itself, so the HTTP protocol classes below add it from the connection's SSL object, once per connection.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from cryptography import x509
from uvicorn.protocols.http.h11_impl import H11Protocol

from local.tls import TlsFiles

log = logging.getLogger("local.serve")
TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}  # the ASGI TLS extension's tls_version values
TRUST_POLL_S = 0.5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tls_extension(transport) -> dict | None:
    """The ASGI TLS extension's values for one connection; None when it is not TLS."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)  # only when verified (CERT_OPTIONAL) and presented
    chain, name = [], None
    if der:
        chain = [ssl.DER_cert_to_PEM_cert(der)]
        name = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    return {"server_cert": None, "client_cert_chain": chain, "client_cert_name": name, "client_cert_error": None,
            "tls_version": TLS_VERSIONS.get(ssl_object.version() or ""), "cipher_suite": None}


class _TlsScope:
    """Mixin for uvicorn's HTTP protocols: every request's scope carries the connection's TLS extension.

    The peer certificate is read once, when the connection is made (asyncio and uvloop call connection_made
    after the handshake), and the app is wrapped for this connection only."""

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        tls = tls_extension(transport)
        if tls is None:
            return
        app = self.app  # type: ignore[has-type]

        async def with_tls(scope, receive, send):
            if scope["type"] == "http":
                scope["extensions"] = {**(scope.get("extensions") or {}), "tls": tls}
            await app(scope, receive, send)

        self.app = with_tls


class TlsH11Protocol(_TlsScope, H11Protocol):
    pass


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # without httptools uvicorn itself falls back to h11
    TlsHttpProtocol: type[asyncio.Protocol] = TlsH11Protocol
else:
    class TlsHttpToolsProtocol(_TlsScope, HttpToolsProtocol):
        pass

    TlsHttpProtocol = TlsHttpToolsProtocol


class ClientTrust:
    """uvicorn's ssl_context_factory for mutual TLS: the default server context, client certificates requested
    (CERT_OPTIONAL) and verified against the roots in `roots`. A root file that does not exist yet (a first
    start, before the seed made the device PKI) is loaded when it appears, by a thread that polls for it; until
    then a device that presents a certificate fails the handshake, and callers without one are unaffected."""

    def __init__(self, roots: Sequence[Path]):
        self.roots = [Path(r) for r in roots]
        self.loaded: list[Path] = []
        self.context: ssl.SSLContext | None = None

    def __call__(self, config: uvicorn.Config, default) -> ssl.SSLContext:
        context = default()
        context.verify_mode = ssl.CERT_OPTIONAL
        self.context = context
        missing = [r for r in self.roots if not self._load(r)]
        if missing:
            log.warning("client CA %s not found yet: loaded when it appears",
                        ", ".join(map(str, missing)))
            threading.Thread(target=self._watch, args=(missing,), name="client-ca-watch", daemon=True).start()
        return context

    def _load(self, root: Path) -> bool:
        try:
            assert self.context is not None
            self.context.load_verify_locations(cafile=str(root))
        except FileNotFoundError:
            return False
        except ssl.SSLError:  # written but not complete yet: try again on the next poll
            return False
        self.loaded.append(root)
        return True

    def _watch(self, missing: list[Path]) -> None:
        # OpenSSL's certificate store may be extended while the context serves: later handshakes see the root.
        while missing:
            time.sleep(TRUST_POLL_S)
            missing = [r for r in missing if not self._load(r)]
        log.info("client CA loaded: %s", ", ".join(map(str, self.loaded)))


def server_config(app, port: int, tls: TlsFiles | None = None, host: str = "127.0.0.1",
                  client_ca: Sequence[Path] | None = None) -> uvicorn.Config:
    """uvicorn's Config for app; with client_ca (root certificate files), mutual TLS as the module says."""
    kwargs: dict = {}
    if tls is not None:
        kwargs = {"ssl_certfile": str(tls.server_cert), "ssl_keyfile": str(tls.server_key)}
    if client_ca is not None:
        if tls is None:
            raise ValueError("client certificates need TLS")
        kwargs.update(ssl_cert_reqs=ssl.CERT_OPTIONAL, ssl_context_factory=ClientTrust(client_ca),
                      http=TlsHttpProtocol)
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


def serve_in_thread(app, port: int, tls: TlsFiles | None = None, startup_timeout: float = 15,
                    client_ca: Sequence[Path] | None = None) -> RunningServer:
    """Start app on 127.0.0.1:port in a daemon thread and return once it accepts connections."""
    server = uvicorn.Server(server_config(app, port, tls, client_ca=client_ca))
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
