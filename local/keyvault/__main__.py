"""`python -m local.keyvault`: the Key Vault emulator (TLS) plus the managed identity endpoint it trusts.

Both read their keys from the stack secrets under --state-dir, so tokens issued by this identity endpoint are the
ones the vault accepts, and every process of the stack that reads the same state dir agrees with them.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import sys
from pathlib import Path

from local.faults import engine_from_environment
from local.identity import identity_app, partner_key
from local.keyvault.app import create_app
from local.secrets import stack_secret
from local.serve import run_servers, server_config
from local.settings_file import PARTNER_TOKEN_AUDIENCE, partner_token_issuer
from local.tls import ensure_tls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.keyvault", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=Path(".local"), help="stack state directory")
    parser.add_argument("--port", type=int, default=8450, help="vault port (https)")
    parser.add_argument(
        "--identity-port", type=int, default=8449, help="managed identity endpoint port (http); 0 = do not serve it"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--faults", default=os.environ.get("LOCAL_FAULT_PROFILE"), metavar="NAME|FILE",
                        help="fault profile for the vault and the identity endpoint (local/faults.py); "
                             "default LOCAL_FAULT_PROFILE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    state_dir: Path = args.state_dir
    tls = ensure_tls(state_dir)
    signing_key = base64.b64decode(stack_secret(state_dir, "identity-signing-key"))
    vault = create_app(state_dir, signing_key, faults=engine_from_environment("keyvault", args.faults))
    configs = [server_config(vault, args.port, tls, host=args.host)]
    if args.identity_port:
        header = stack_secret(state_dir, "identity-header")
        issuer, audience = partner_token_issuer(args.identity_port), PARTNER_TOKEN_AUDIENCE
        app = identity_app(signing_key, header, partner_key(state_dir), issuer, audience,
                           faults=engine_from_environment("identity", args.faults))
        configs.append(server_config(app, args.identity_port, host=args.host))
    for config in configs:
        # TLS connections that clients keep alive would otherwise hold shutdown for the 30 s TLS close timeout.
        config.timeout_graceful_shutdown = 3
    print(f"Key Vault emulator: https://localhost:{args.port}  (trust {tls.ca_bundle})", file=sys.stderr)
    if args.identity_port:
        print(f"Managed identity:   http://127.0.0.1:{args.identity_port}/msi/token", file=sys.stderr)
    run_servers(configs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
