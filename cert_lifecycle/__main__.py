"""`python -m cert_lifecycle ...`: the old entry point, an alias of the operator CLI (cli/certs.py, cli/alerts.py).

    python -m cert_lifecycle alerts [--drain]   = onboarding alerts [--drain]
    python -m cert_lifecycle scan [--at TIME]   = onboarding certs scan [--at TIME] --json
    python -m cert_lifecycle collect            = onboarding certs collect --json
    python -m cert_lifecycle refresh-crls       = onboarding certs refresh-crls
"""

from __future__ import annotations

import sys

OLD_COMMANDS = {"alerts": ["alerts"], "scan": ["certs", "scan"], "collect": ["certs", "collect"],
                "refresh-crls": ["certs", "refresh-crls"]}
JSON_BY_DEFAULT = {"scan", "collect"}  # what these printed before the CLI existed


def translate(argv: list[str]) -> list[str]:
    """The old arguments as the CLI's: the command gets its new name; options before it stay global."""
    at = next((i for i, arg in enumerate(argv) if arg in OLD_COMMANDS), None)
    if at is None:
        return ["certs", *argv]  # no command: the CLI's usage error names the certs subcommands
    extra = ["--json"] if argv[at] in JSON_BY_DEFAULT else []
    return [*argv[:at], *OLD_COMMANDS[argv[at]], *argv[at + 1:], *extra]


def main(argv: list[str] | None = None) -> int:
    from cli.main import run_alias

    return run_alias(translate(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
