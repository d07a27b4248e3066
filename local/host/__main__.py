"""`python -m local.host`: the stand-in for `func start` (Core Tools cannot be installed offline).

    python -m local.host --app function_app:app --port 7071 --settings local.settings.json \
        --host-json host.json --state-dir .local [--no-auth]

FUNCTIONS_WORKER_PROCESS_COUNT (from the environment or local.settings.json) runs that many worker processes
on the one port, as the Functions host does (local/host/workers.py).

Order matters as in Core Tools: local.settings.json is exported to the environment before the app is
imported, so module-level code sees its settings. Keys come from the stack state (.local/secrets.json:
function-key-default, function-master-key); --no-auth turns key checks off like Core Tools.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import uvicorn

from local.host.app import banner, create_host_app
from local.host.keys import FUNCTION_KEY_SECRET, MASTER_KEY_SECRET, HostKeys
from local.host.loader import import_app
from local.host.settings import DEFAULT_PORT, load_host_json, load_local_settings
from local.host.workers import run_workers, worker_process_count
from local.serve import server_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m local.host", description=__doc__.splitlines()[0])
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    parser.add_argument("--port", type=int, default=None,
                        help=f"port (default: Host.LocalHttpPort from the settings file, else {DEFAULT_PORT})")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--settings", default="local.settings.json", help="local.settings.json path")
    parser.add_argument("--host-json", default="host.json", help="host.json path")
    parser.add_argument("--state-dir", default=".local", help="stack state directory holding the keys")
    parser.add_argument("--script-root", default=".", help="directory the app module is imported from")
    parser.add_argument("--no-auth", action="store_true", help="do not enforce function keys (Core Tools' way)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    settings = load_local_settings(args.settings)
    host_json = load_host_json(args.host_json)
    function_app = import_app(args.app, args.script_root)
    keys = None if args.no_auth else HostKeys.from_state_dir(args.state_dir)
    app = create_host_app(function_app, host_json, keys)
    port = args.port or settings.local_http_port or DEFAULT_PORT
    print(banner(app, f"http://{args.host}:{port}"), file=sys.stderr)
    if keys is None:
        print("\nKeys: not enforced (--no-auth)", file=sys.stderr)
    else:
        secrets = Path(args.state_dir) / "secrets.json"
        print(f"\nKeys: enforced; function key '{FUNCTION_KEY_SECRET}', master key '{MASTER_KEY_SECRET}' in {secrets}"
              " (send as x-functions-key or ?code=, URL-encoded)", file=sys.stderr)
    try:
        workers = worker_process_count()
    except ValueError as exc:
        print(f"host not started: {exc}", file=sys.stderr)
        return 2
    if workers == 1:
        uvicorn.Server(server_config(app, port, host=args.host)).run()
        return 0

    def serve(index: int, sock) -> None:
        worker_app = app if index == 0 else create_host_app(function_app, host_json, keys, listeners=False)
        uvicorn.Server(server_config(worker_app, port, host=args.host)).run(sockets=[sock])

    return run_workers(workers, serve, args.host, port)


if __name__ == "__main__":
    raise SystemExit(main())
