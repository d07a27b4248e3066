"""`onboarding`: the operator CLI. Builds the parser from the command groups, loads settings, runs one command,
prints its result (text, or --json) and turns any failure into one line with an error code (cli/errors.py).

Command groups register themselves: each module in GROUPS has `register(commands, common)`, adds its
subcommand(s) with `parents=[common]` (so the global options work after the subcommand too) and sets
`run=<function(args) -> Outcome>`. A new group (partners, templates, fleet, capacity) is one module and one
line in GROUPS.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
import warnings
from pathlib import Path

from cli.errors import classify
from cli.output import Outcome, print_json
from cli.settings import load_settings

GROUPS = ("cli.explain", "cli.preview", "cli.certs", "cli.alerts", "cli.health", "cli.partners", "cli.hubs",
          "cli.capacity", "cli.templates", "cli.overrides", "cli.funnel")

DESCRIPTION = """Operate the sensor onboarding app: the local stack by default (./local.settings.json), or a
deployment (--settings FILE with its app settings, after `az login`). App settings in the environment win over
the file's. Errors: one line `onboarding: error <code>: <message>` on stderr; exit 2 for refusals and bad input,
1 for faults."""


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The options every command takes. On subcommands their defaults are SUPPRESS, so `onboarding --json
    explain X` and `onboarding explain X --json` both work and neither position overwrites the other."""
    def default(value):
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--settings", type=Path, metavar="FILE", default=default(None),
                        help="app settings file (default: ./local.settings.json when it exists); "
                             "the environment's values win")
    parser.add_argument("--json", action="store_true", default=default(False), help="print the result as JSON")
    parser.add_argument("--debug", action="store_true", default=default(False),
                        help="show logs and, on failure, the traceback")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onboarding", description=DESCRIPTION)
    _global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in GROUPS:
        importlib.import_module(name).register(commands, common)
    return parser


def configure_logging(debug: bool) -> None:
    """--debug: every log line on stderr. Otherwise none at all (the Azure SDKs log failed requests and retries
    as warnings, which Python would print through its last-resort handler) and no Python warnings either."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    logging.captureWarnings(True)
    if debug:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        for chatty in ("urllib3", "uamqp"):  # connection-level chatter, not what --debug is for
            logging.getLogger(chatty).setLevel(logging.INFO)
    else:
        root.addHandler(logging.NullHandler())
        root.setLevel(logging.CRITICAL + 1)
        warnings.simplefilter("ignore")


def _show(outcome: Outcome, as_json: bool) -> None:
    try:
        if as_json:
            print_json(outcome.data, sys.stdout)
        else:
            outcome.render(outcome.data, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:  # `onboarding ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _execute(argv: list[str], settings_must_exist: bool) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.debug)
    try:
        load_settings(args.settings, must_exist=settings_must_exist)
        outcome = args.run(args)
        _show(outcome, args.json)
        if outcome.failure is not None:
            raise outcome.failure
    except KeyboardInterrupt:
        print("onboarding: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line with a code
        failure = classify(exc)
        if args.debug:
            traceback.print_exception(exc, file=sys.stderr)
        print(failure.line(), file=sys.stderr)
        return failure.exit_status
    return 0


def main(argv: list[str] | None = None) -> int:
    """The console script `onboarding` (and `python -m cli`)."""
    return _execute(sys.argv[1:] if argv is None else list(argv), settings_must_exist=True)


def run_alias(argv: list[str]) -> int:
    """The old module entry points (python -m allocation.explain, twin_setup.preview, cert_lifecycle): the same
    commands; as before, a --settings file that does not exist is ignored (the environment alone)."""
    return _execute(list(argv), settings_must_exist=False)
