"""`python -m local.dps`: the DPS service API emulator, and what it holds.

  serve [--state-dir .local] [--port 8451]   serve https://localhost:PORT (the stack's TLS), enrollments kept in
                                             STATE_DIR/dps/enrollments.json; bearer tokens of the stack's identity
                                             endpoint or SAS of policy provisioningserviceowner
  enrollments [--state-dir .local] [--json]  list the individual enrollments: registration ID, status, the
                                             certificate's serial and SHA-256 thumbprint, created, updated
  connection-string [--state-dir] [--port]   the emulator's service connection string (SAS), for development
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import sys
from pathlib import Path

from local.dps.service import DEFAULT_PORT, OWNER_POLICY, create_app, owner_key, stack_connection_string
from local.dps.store import EnrollmentStore, store_path


def enrollment_rows(state_dir: Path) -> list[dict]:
    """One row per individual enrollment of the emulator under state_dir (its primary certificate)."""
    rows = []
    for entry in EnrollmentStore(state_dir).entries():
        record = entry["record"]
        client = record.get("attestation", {}).get("x509", {}).get("clientCertificates", {})
        info = (client.get("primary") or {}).get("info", {})
        rows.append({
            "registrationId": record["registrationId"],
            "provisioningStatus": record["provisioningStatus"],
            "serialNumber": info.get("serialNumber"),
            "sha256Thumbprint": info.get("sha256Thumbprint"),
            "subjectName": info.get("subjectName"),
            "issuerName": info.get("issuerName"),
            "notAfterUtc": info.get("notAfterUtc"),
            "secondarySerialNumber": (client.get("secondary") or {}).get("info", {}).get("serialNumber"),
            "createdDateTimeUtc": record["createdDateTimeUtc"],
            "lastUpdatedDateTimeUtc": record["lastUpdatedDateTimeUtc"],
        })
    return rows


def format_rows(rows: list[dict]) -> str:
    header = ("REGISTRATION ID", "STATUS", "SERIAL", "SHA-256", "CREATED", "UPDATED")
    table = [header] + [(r["registrationId"], r["provisioningStatus"], r["serialNumber"] or "-",
                         (r["sha256Thumbprint"] or "-")[:16] + ("..." if r["sha256Thumbprint"] else ""),
                         r["createdDateTimeUtc"][:19] + "Z", r["lastUpdatedDateTimeUtc"][:19] + "Z") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in table]
    disabled = sum(1 for r in rows if r["provisioningStatus"] == "disabled")
    lines.append(f"{len(rows)} individual enrollment(s), {disabled} disabled")
    return "\n".join(lines)


def serve(args: argparse.Namespace) -> int:
    from local.secrets import stack_secret
    from local.serve import run_servers, server_config
    from local.tls import ensure_tls

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    state_dir: Path = args.state_dir
    tls = ensure_tls(state_dir)
    signing_key = base64.b64decode(stack_secret(state_dir, "identity-signing-key"))
    app = create_app(state_dir, signing_key, f"localhost:{args.port}", {OWNER_POLICY: owner_key(state_dir)})
    print(f"DPS service API emulator: https://localhost:{args.port}  (enrollments: {store_path(state_dir)}; "
          f"trust {tls.ca_bundle})", file=sys.stderr)
    run_servers([server_config(app, args.port, tls, host=args.host)])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.dps", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="serve the DPS service API emulator")
    serve_cmd.add_argument("--state-dir", type=Path, default=Path(".local"), help="stack state directory")
    serve_cmd.add_argument("--port", type=int, default=DEFAULT_PORT, help="https port")
    serve_cmd.add_argument("--host", default="127.0.0.1", help="address to listen on")
    listing = commands.add_parser("enrollments", help="list the individual enrollments")
    listing.add_argument("--state-dir", type=Path, default=Path(".local"), help="stack state directory")
    listing.add_argument("--json", action="store_true", help="one JSON document on stdout")
    conn = commands.add_parser("connection-string", help="print the emulator's service connection string")
    conn.add_argument("--state-dir", type=Path, default=Path(".local"), help="stack state directory")
    conn.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)

    if args.command == "serve":
        return serve(args)
    if args.command == "connection-string":
        print(stack_connection_string(args.state_dir, args.port))
        return 0
    try:
        rows = enrollment_rows(args.state_dir)
    except (OSError, ValueError) as exc:
        print(f"python -m local.dps: cannot read {store_path(args.state_dir)}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(rows, indent=2) if args.json else format_rows(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
