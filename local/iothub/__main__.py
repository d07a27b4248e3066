"""Run the stack's IoT hubs in one process: `python -m local.iothub --state-dir .local --hub west=8441 ...`.

Each `--hub NAME=PORT` serves https://localhost:PORT. NAME may be short ("west": hub iothub-west-local) or the
full hub name ("iothub-west-local"); the SAS keys are the stack secrets `iothub-{NAME}-{policy}` (policies
iothubowner, service, registryReadWrite) and bearer tokens are checked with the stack's identity signing key.

Devices authenticate with client certificates (mutual TLS, local/serve.py): a presented certificate must chain
to a `--device-ca` root, by default the device PKI's root `{state-dir}/pki/root-ca.pem` (local/seed/pki.py). On
a first start that file may not exist yet (the seed makes it); the hub then loads it as soon as it appears, and
until then devices that present a certificate fail the handshake. Callers without a certificate (the service
SDKs) are never affected.

Event Grid delivery (local/iothub/events.py): Event Grid's retry schedule times --event-time-scale (default
LOCAL_EVENT_GRID_TIME_SCALE, else 0.1: the first retry after 1 s), the subscription's maxDeliveryAttempts and
eventTimeToLiveInMinutes as infra sets them, and dead letters written to the stack's Azurite container
`eventgrid-deadletter`. --faults NAME|FILE (default LOCAL_FAULT_PROFILE) injects a fault profile's "iothub" part
into the hub's REST API and its "eventgrid" part into the deliveries (local/faults.py).
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import replace
from pathlib import Path

from local.azurite import connection_string as azurite_connection_string
from local.faults import engine_from_environment
from local.iothub.app import create_app
from local.iothub.config import DEVICE_CREATED, DEVICE_DELETED, RateLimits, TwinLimits, local_hub_config
from local.iothub.events import DEAD_LETTER_CONTAINER, DeadLetterTarget, DeliveryPolicy
from local.serve import run_servers, server_config
from local.tls import ensure_tls


def _hub(value: str) -> tuple[str, int]:
    name, sep, port = value.partition("=")
    if not sep or not name or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME=PORT, got {value!r}")
    return name, int(port)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m local.iothub", description=__doc__)
    parser.add_argument("--state-dir", type=Path, default=Path(".local"), help="stack state directory")
    parser.add_argument("--hub", type=_hub, action="append", required=True, metavar="NAME=PORT")
    parser.add_argument("--event-grid-url", help="Event Grid webhook that receives device lifecycle events")
    parser.add_argument(
        "--event-types", default=f"{DEVICE_CREATED},{DEVICE_DELETED}", help="comma-separated event types to deliver"
    )
    parser.add_argument("--rate-multiplier", type=float, default=1.0, help="scale the S1 throttles (demos)")
    parser.add_argument("--units", type=int, default=1, help="S1 units per hub")
    parser.add_argument("--no-rate-limit", action="store_true", help="turn the throttles off")
    parser.add_argument("--desired-limit-kb", type=int, default=32, help="desired properties size limit")
    parser.add_argument("--listen", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--device-ca", type=Path, action="append", metavar="FILE",
                        help="root CA (PEM) that device certificates chain to; repeatable "
                             "(default: STATE_DIR/pki/root-ca.pem)")
    parser.add_argument("--faults", default=os.environ.get("LOCAL_FAULT_PROFILE"), metavar="NAME|FILE",
                        help="fault profile (local/fault_profiles/NAME.json or a file); default LOCAL_FAULT_PROFILE")
    parser.add_argument("--event-time-scale", type=float,
                        default=float(os.environ.get("LOCAL_EVENT_GRID_TIME_SCALE") or 0.1),
                        help="Event Grid's retry schedule, time-to-live and dead-letter delay times this")
    parser.add_argument("--event-max-attempts", type=int, default=30, help="the subscription's maxDeliveryAttempts")
    parser.add_argument("--event-ttl-minutes", type=float, default=1440,
                        help="the subscription's eventTimeToLiveInMinutes (scaled by --event-time-scale)")
    parser.add_argument("--dead-letter-container", default=DEAD_LETTER_CONTAINER,
                        help="dead-letter blob container; '' = keep dead letters on disk only")
    parser.add_argument("--dead-letter-connection-string",
                        default=os.environ.get("LOCAL_DEAD_LETTER_CONNECTION_STRING") or azurite_connection_string(),
                        help="storage of the dead-letter container (default: the stack's Azurite)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per event delivery is noise at fleet scale
    tls = ensure_tls(args.state_dir)
    rates = RateLimits(enabled=not args.no_rate_limit, multiplier=args.rate_multiplier, units=args.units)
    limits = replace(TwinLimits(), desired_bytes=args.desired_limit_kb * 1024)
    event_types = frozenset(t.strip() for t in args.event_types.split(",") if t.strip())
    device_cas = args.device_ca or [args.state_dir / "pki" / "root-ca.pem"]
    configs = []
    for name, port in args.hub:
        config = local_hub_config(
            args.state_dir,
            name,
            port,
            rate_limits=rates,
            twin_limits=limits,
            event_grid_url=args.event_grid_url,
            event_types=event_types,
        )
        dead_letter = DeadLetterTarget(args.dead_letter_connection_string, args.dead_letter_container) \
            if args.dead_letter_container else None
        delivery = DeliveryPolicy.scaled(args.event_time_scale, args.event_max_attempts, args.event_ttl_minutes,
                                         dead_letter=dead_letter,
                                         faults=engine_from_environment("eventgrid", args.faults))
        app = create_app(config, delivery, faults=engine_from_environment("iothub", args.faults))
        configs.append(server_config(app, port, tls, host=args.listen, client_ca=device_cas))
    run_servers(configs)


if __name__ == "__main__":
    main()
