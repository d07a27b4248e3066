"""Run by the REAL Azure CLI's Python (the throwaway venv of tests/infra/test_real_az_cli.py), never imported by
the tests: it needs the azure-cli package, which the project's venv does not have.

    python real_az_parse.py parse <az arguments...>    parse one command line with azure-cli's own parser
    python real_az_parse.py describe <command words...> print that command's options as the parser holds them

`parse` runs the CLI's normal invocation (command table, argument loading, @file expansion, argparse) and stops
right after parsing: a knack event handler raises when the parser has accepted the line, before validators and
the command itself run, so nothing needs credentials or the network. Prints "PARSED <command>" and exits 0, or
lets the CLI report the parse error (ERROR: unrecognized arguments ..., exit 2). Should the hook ever not fire
(an azure-cli that no longer raises that event), the command runs as usual; the test then reads its output.
"""

from __future__ import annotations

import json
import sys

from azure.cli.core import get_default_cli
from knack.events import EVENT_INVOKER_CMD_TBL_LOADED, EVENT_INVOKER_POST_PARSE_ARGS


class Stop(BaseException):
    """Not an Exception: knack's CLI.invoke() turns those into an error exit; this one must pass through it."""

    def __init__(self, payload):
        super().__init__()
        self.payload = payload


def parse(argv: list[str]) -> int:
    def stop(_cli_ctx, **kwargs):
        raise Stop(kwargs.get("command"))

    cli = get_default_cli()
    cli.register_event(EVENT_INVOKER_POST_PARSE_ARGS, stop)
    try:
        code = cli.invoke(argv)
    except Stop as parsed:
        print(f"PARSED {parsed.payload}")
        return 0
    print("NOT STOPPED: the command ran past the parse hook", file=sys.stderr)
    return code or 3


def describe(words: list[str]) -> int:
    command = " ".join(words)

    def dump(_cli_ctx, **kwargs):
        parser = kwargs["parser"].subparser_map[command]
        raise Stop([{"options": action.option_strings, "nargs": action.nargs, "required": action.required,
                     "choices": list(action.choices) if action.choices else None}
                    for action in parser._actions if action.option_strings])

    cli = get_default_cli()
    cli.register_event(EVENT_INVOKER_CMD_TBL_LOADED, dump)
    try:
        cli.invoke(words)
    except Stop as described:
        print(json.dumps(described.payload))
        return 0
    return 3


if __name__ == "__main__":
    mode, rest = sys.argv[1], sys.argv[2:]
    sys.exit(parse(rest) if mode == "parse" else describe(rest))
