"""A TCP fault proxy in front of Azurite (issue 16): Azurite cannot take a fault profile, so its clients reach it
through this proxy, which forwards bytes (never parses HTTP: Blob is TLS, and whatever Azurite speaks passes as it
is) and injects faults at the connection level from the profile's "storage" service:

    "storage": {
      "default":    {"latency_ms": [2, 10], "errors": {"reset": 0.002, "hang": 0.001}, "hang_s": 8},
      "operations": [{"name": "blob", "path": "^blob$", "latency_ms": [4, 12]}],
      "outages":    [{"after_s": 120, "for_s": 6, "every_s": 600, "fault": "hang"}]}

- Each chunk a client sends (about one request: SDK clients send a request's headers and small bodies in one write)
  is one decision of local/faults.py's engine, with the route's name ("blob", "queue") as the path an operation
  matches: `latency_ms` delays the chunk; "reset" aborts both connections with a TCP RST (the client sees a
  connection reset); "hang" holds the chunk `hang_s` seconds before it goes on (a client's own timeout should end it
  first). HTTP status faults (429, 500, 503) cannot be made without parsing HTTP: a profile that names them for
  "storage" is refused.
- "outages" are windows in seconds after the proxy started (`every_s` repeats them): while one is open every chunk
  gets its fault, which must be given: "hang" or "reset".
- Answers from Azurite pass unchanged and undelayed.

The stack starts it only when the profile has a "storage" service (local/stack.py): Azurite then listens on ports
shifted by PORT_SHIFT and the proxy on the stack's own ports, so the app's settings do not change. Tests start one in
a thread (`FaultProxy(...).start()`) and may hold all traffic by hand (`proxy.hold(seconds)`).
`python -m local.storage_proxy --faults bad-day --route blob=10000:10020` runs one on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass

from local.faults import ENV_PROFILE, FaultEngine, ProfileError, ServiceProfile, load_profile, service_profile

log = logging.getLogger("local.storage_proxy")
SERVICE = "storage"
TCP_FAULTS = ("reset", "hang")
PORT_SHIFT = 20  # Azurite's ports behind the proxy: 10000 -> 10020 (blob), 10001 -> 10021 (queue)
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Route:
    name: str  # blob | queue | table: the "path" a profile operation matches
    listen: int
    target: int


def storage_engine(name_or_path: str, seed: int | None = None) -> FaultEngine | None:
    """The engine of a profile's "storage" service; None when the profile has none. Refuses HTTP status faults."""
    name, document = load_profile(name_or_path)
    if SERVICE not in (document.get("services") or {}):
        return None
    profile = service_profile(document, SERVICE, name)
    check_tcp_only(profile)
    return FaultEngine(profile, seed=seed)


def check_tcp_only(profile: ServiceProfile) -> None:
    for op in (*profile.operations, profile.default):
        bad = [kind for kind, p in op.errors if kind not in TCP_FAULTS and p > 0]
        if bad:
            raise ProfileError(f"{profile.profile}: services.{profile.service} ({op.name}): {bad} need HTTP; a TCP "
                               f"proxy can inject only {list(TCP_FAULTS)}")
    for outage in profile.outages:
        if outage.fault not in TCP_FAULTS:
            raise ProfileError(f"{profile.profile}: services.{profile.service}.outages: fault {outage.fault!r}; "
                               f"a TCP proxy can inject only {list(TCP_FAULTS)}")


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST, as a crashed or overloaded front end does (SO_LINGER 0), not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


class FaultProxy:
    """One proxy, any number of routes, on its own event loop (a thread, or the main one under `python -m`)."""

    def __init__(self, routes: list[Route], engine: FaultEngine | None, host: str = "127.0.0.1"):
        self.routes = routes
        self.engine = engine or FaultEngine(ServiceProfile(SERVICE))
        self.host = host
        self.connections = 0
        self._hold_until = 0.0  # tests: every chunk waits until then
        self._loop: asyncio.AbstractEventLoop | None = None
        self._servers: list[asyncio.base_events.Server] = []
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    # -- control ----------------------------------------------------------------------------------------------
    def hold(self, seconds: float) -> None:
        """Hold every chunk from now for `seconds` (0 releases): a dependency that hangs, switched by a test."""
        self._hold_until = time.monotonic() + seconds

    def counters(self) -> dict:
        return {**self.engine.counters(), "connections": self.connections}

    # -- the proxy --------------------------------------------------------------------------------------------
    async def _pump_up(self, route: Route, reader, writer, client_writer) -> None:
        """Client -> Azurite, one fault decision per chunk."""
        while data := await reader.read(CHUNK):
            decision = self.engine.decide("TCP", route.name)
            wait = self._hold_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if decision is not None:
                if decision.delay_s:
                    await asyncio.sleep(decision.delay_s)
                if decision.fault == "reset":
                    _reset(client_writer)
                    _reset(writer)
                    return
                if decision.fault == "hang":
                    await asyncio.sleep(decision.hang_s)
            writer.write(data)
            await writer.drain()
        writer.write_eof() if writer.can_write_eof() else writer.close()

    @staticmethod
    async def _pump_down(reader, writer) -> None:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        writer.write_eof() if writer.can_write_eof() else writer.close()

    async def _serve(self, route: Route, client_reader, client_writer) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, route.target)
        except OSError:
            _reset(client_writer)  # Azurite down: the client sees what it would see without the proxy
            return
        pumps = [asyncio.ensure_future(self._pump_up(route, client_reader, up_writer, client_writer)),
                 asyncio.ensure_future(self._pump_down(up_reader, client_writer))]
        try:
            await asyncio.gather(*pumps)
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            for pump in pumps:
                pump.cancel()
            for w in (up_writer, client_writer):
                w.close()

    async def _start_servers(self) -> None:
        for route in self.routes:
            server = await asyncio.start_server(lambda r, w, route=route: self._serve(route, r, w), self.host,
                                                route.listen, reuse_address=True)
            self._servers.append(server)
        log.info("storage fault proxy (%s): %s", self.engine.profile.profile,
                 ", ".join(f"{r.name} {r.listen} -> {r.target}" for r in self.routes))

    # -- lifecycle --------------------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        """Serve on a daemon thread; returns once listening."""
        def run():
            loop = self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._start_servers())
            self._ready.set()
            loop.run_forever()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name="storage-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("storage proxy did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def close():
            for server in self._servers:
                server.close()

        asyncio.run_coroutine_threadsafe(close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)  # run() then cancels the open connections and closes the loop
        if self._thread is not None:
            self._thread.join(5)

    async def serve_forever(self) -> None:
        await self._start_servers()
        await asyncio.gather(*(s.serve_forever() for s in self._servers))


def parse_route(text: str) -> Route:
    """blob=10000:10020 -> Route("blob", 10000, 10020)."""
    try:
        name, ports = text.split("=", 1)
        listen, target = (int(p) for p in ports.split(":", 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"route {text!r}: expected NAME=LISTEN:TARGET, e.g. blob=10000:10020") \
            from None
    return Route(name, listen, target)


def main(argv: list[str] | None = None) -> int:
    import os

    parser = argparse.ArgumentParser(prog="python -m local.storage_proxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", default=os.environ.get(ENV_PROFILE), help="profile name or file")
    parser.add_argument("--route", type=parse_route, action="append", required=True, metavar="NAME=LISTEN:TARGET")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    try:
        engine = storage_engine(args.faults) if args.faults else None
    except ProfileError as exc:
        print(f"error: fault_profile_invalid: {exc}", file=sys.stderr)
        return 2
    proxy = FaultProxy(args.route, engine)
    try:
        asyncio.run(proxy.serve_forever())
    except KeyboardInterrupt:
        pass
    finally:
        log.info("storage fault proxy stopped: %s", proxy.counters())
    return 0


if __name__ == "__main__":
    sys.exit(main())


def stack_plan(profile: str | None, ports):
    """For local/stack.py: (Azurite's ports, the proxy's `python -m` arguments). With no profile, or one without a
    "storage" service: (ports, None), so nothing changes. Otherwise Azurite moves PORT_SHIFT up and the proxy takes
    the stack's own Blob and Queue ports (Table is unused by the app)."""
    from dataclasses import replace

    if not profile or storage_engine(profile) is None:  # also validates the profile before anything starts
        return ports, None
    behind = replace(ports, blob=ports.blob + PORT_SHIFT, queue=ports.queue + PORT_SHIFT,
                     table=ports.table + PORT_SHIFT)
    return behind, ["-m", "local.storage_proxy", "--faults", profile,
                    "--route", f"blob={ports.blob}:{behind.blob}", "--route", f"queue={ports.queue}:{behind.queue}",
                    "--route", f"table={ports.table}:{behind.table}"]
